"""labmail -- the mail-protocol side of cyruslab: IMAP answers parsed for
comparisons, a minimal ManageSieve client, deterministic test messages.

Python 3 standard library only; no knowledge of how the servers are run.
"""
import base64
import re
import socket


class LabError(Exception):
    """A Cyrus instance or tool did not do what the lab expected."""


def check_ok(typ, data, what):
    """Raise LabError unless an imaplib command answered OK."""
    if typ != "OK":
        raise LabError("IMAP %s failed: %s %r" % (what, typ, data))


def list_name(line):
    """The mailbox name from a LIST/LSUB response line."""
    if isinstance(line, tuple):  # a literal name
        return line[1].decode()
    text = line.decode()
    m = re.match(r'^\([^)]*\) (?:"[^"]*"|NIL) (.*)$', text)
    if not m:
        raise LabError("unparsable LIST line %r" % text)
    name = m.group(1)
    if name.startswith('"') and name.endswith('"'):
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return name


FETCH_ITEM = re.compile(
    r"UID (\d+)|FLAGS \(([^)]*)\)|DIGEST\.SHA1 ([0-9a-fA-F]+)"
    r"|RFC822\.SIZE (\d+)")


def mailbox_state(conn, name):
    """uniqueid, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and every message's
    UID, flags (without \\Recent), GUID and size of one mailbox, as the
    logged-in user of conn sees it (name in that user's view)."""
    typ, data = conn.status('"%s"' % name, "(UIDVALIDITY UIDNEXT MESSAGES "
                            "HIGHESTMODSEQ)")
    check_ok(typ, data, "STATUS")
    status = dict(re.findall(r"(UIDVALIDITY|UIDNEXT|MESSAGES|HIGHESTMODSEQ)"
                             r" (\d+)", data[0].decode()))
    # Asked together with the items above, Cyrus 3.6.1 answers MAILBOXID
    # with garbage bytes; on its own it is right.
    typ, data = conn.status('"%s"' % name, "(MAILBOXID)")
    check_ok(typ, data, "STATUS")
    mailboxid = re.search(r"MAILBOXID \(([^)]*)\)",
                          data[0].decode("ascii", "replace"))
    state = {"uniqueid": mailboxid.group(1) if mailboxid else None,
             "uidvalidity": int(status["UIDVALIDITY"]),
             "uidnext": int(status["UIDNEXT"]),
             "highestmodseq": int(status["HIGHESTMODSEQ"]), "messages": []}
    if int(status["MESSAGES"]) == 0:
        return state
    typ, data = conn.select('"%s"' % name, readonly=True)
    check_ok(typ, data, "EXAMINE")
    typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS DIGEST.SHA1 RFC822.SIZE)")
    check_ok(typ, data, "FETCH")
    for line in data:
        if isinstance(line, tuple):
            line = line[0]
        if not line:
            continue
        message = {}
        for uid, flags, guid, size in FETCH_ITEM.findall(line.decode()):
            if uid:
                message["uid"] = int(uid)
            elif guid:
                message["guid"] = guid.lower()
            elif size:
                message["size"] = int(size)
            else:
                message["flags"] = sorted(f for f in flags.split()
                                          if f != "\\Recent")
        if "flags" not in message and "FLAGS ()" in line.decode():
            message["flags"] = []
        state["messages"].append(message)
    state["messages"].sort(key=lambda m: m["uid"])
    conn.close()
    return state


class ManageSieve:
    """Just enough RFC 5804 (PUTSCRIPT, SETACTIVE, LISTSCRIPTS, DELETESCRIPT)
    for test data; authenticates as `user` through the admin (PLAIN)."""

    def __init__(self, port, user, admin, admin_password):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")
        self._response()
        token = base64.b64encode(("%s\0%s\0%s" % (user, admin,
                                                  admin_password)).encode())
        self.command(b'AUTHENTICATE "PLAIN" "%s"\r\n' % token)

    def _response(self):
        lines = []
        while True:
            line = self.reader.readline()
            if not line:
                raise LabError("sieve connection closed")
            lines.append(line)
            if line[:2].upper() in (b"OK", b"NO", b"BY"):
                return lines

    def command(self, raw):
        self.sock.sendall(raw)
        lines = self._response()
        if not lines[-1].upper().startswith(b"OK"):
            raise LabError("sieve %r -> %r" % (raw[:60], lines))
        return lines

    def put_script(self, name, body):
        data = body.encode()
        self.command(b'PUTSCRIPT "%s" {%d+}\r\n%s\r\n'
                     % (name.encode(), len(data), data))

    def set_active(self, name):
        self.command(b'SETACTIVE "%s"\r\n' % name.encode())

    def delete_script(self, name):
        self.command(b'DELETESCRIPT "%s"\r\n' % name.encode())

    def list_scripts(self):
        """[(name, active)] of the user's scripts."""
        scripts = []
        for line in self.command(b"LISTSCRIPTS\r\n")[:-1]:
            m = re.match(rb'^"([^"]*)"( ACTIVE)?', line)
            if m:
                scripts.append((m.group(1).decode(), bool(m.group(2))))
        return scripts

    def close(self):
        try:
            self.sock.sendall(b"LOGOUT\r\n")
            self._response()
        except (OSError, LabError):
            pass
        self.reader.close()
        self.sock.close()


_WORDS = ("backup replication mailbox server report meeting budget invoice "
          "release schedule deadline review draft proposal customer ticket "
          "deploy rollback lorem ipsum dolor sit amet café über").split()


def make_message(user, index, size=600, subject=None, extra_headers=()):
    """A deterministic RFC 5322 message (bytes, CRLF) of about `size`
    bytes: the same arguments always give the same bytes."""
    seed = sum((i + 1) * ord(c) for i, c in enumerate("%s/%d" % (user, index)))
    words = [_WORDS[(seed + i * 7) % len(_WORDS)] for i in range(size // 6)]
    lines = [" ".join(words[i:i + 10]) for i in range(0, len(words), 10)]
    day = 1 + index % 28
    headers = [
        "From: Sender %d <sender%d@cyruslab.example>" % (index % 5, index % 5),
        "To: %s <%s@cyruslab.example>" % (user, user),
        "Subject: %s" % (subject or "Test message %d for %s" % (index, user)),
        "Date: Sun, %02d Jun 2025 12:%02d:00 +0000" % (day, index % 60),
        "Message-ID: <%s.%d@cyruslab.example>" % (user, index),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ] + list(extra_headers)
    text = "\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n"
    return text.encode("utf-8")
