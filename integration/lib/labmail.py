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


SIEVE_SCRIPT = """require ["fileinto"];
# cyruslab: list mail goes to Work
if header :contains "List-Id" "cyruslab" {
  fileinto "INBOX.Work";
}
"""


def populate(source, users, messages=5, size=600, extras=True, sieve=True):
    """Deterministic mail for users on a cyruslab Source: `messages`
    messages each (make_message(user, 1..messages), LMTP).  extras: folders
    Work and Archive, uid 1 copied to Archive, uid 2 moved to Work, flags
    on uids 3 and 4, the last uid expunged, Work subscribed, Archive shared
    with the next user (lrs), who marks its first message \\Seen (non-owner
    seen state).  sieve: script "lab" uploaded and active.  The same
    arguments always give the same messages and operations; compare
    results with source.snapshot()."""
    for user in users:
        source.deliver(user, *[make_message(user, i, size)
                               for i in range(1, messages + 1)])
    if extras:
        for n, user in enumerate(users):
            _user_extras(source, user, users[(n + 1) % len(users)], messages)
        for n, user in enumerate(users):
            owner = users[(n - 1) % len(users)]
            if owner == user:
                continue
            with source.imap(user) as conn:
                shared = source.lab.user_mailbox(owner, "Archive")
                check_ok(*conn.select('"%s"' % shared), "SELECT shared")
                check_ok(*conn.store("1", "+FLAGS.SILENT", r"(\Seen)"),
                         "STORE shared")
    if sieve:
        for user in users:
            client = source.sieve(user)
            try:
                client.put_script("lab", SIEVE_SCRIPT)
                client.set_active("lab")
            finally:
                client.close()


def _user_extras(source, user, next_user, messages):
    sep = source.lab.separator
    work, archive = "INBOX%sWork" % sep, "INBOX%sArchive" % sep
    steps = [("CREATE", lambda c: c.create(work)),
             ("CREATE", lambda c: c.create(archive)),
             ("SELECT", lambda c: c.select("INBOX")),
             ("COPY", lambda c: c.uid("COPY", "1", archive)),
             ("SUBSCRIBE", lambda c: c.subscribe(work))]
    if messages >= 2:
        steps.append(("MOVE", lambda c: c.uid("MOVE", "2", work)))
    if messages >= 3:
        steps.append(("STORE", lambda c: c.uid(
            "STORE", "3", "+FLAGS.SILENT", r"(\Seen \Answered)")))
    if messages >= 4:
        steps.append(("STORE", lambda c: c.uid(
            "STORE", "4", "+FLAGS.SILENT", r"(\Flagged $Important)")))
    if messages >= 5:
        steps += [("STORE", lambda c: c.uid(
            "STORE", str(messages), "+FLAGS.SILENT", r"(\Deleted)")),
                  ("EXPUNGE", lambda c: c.expunge())]
    if next_user != user:
        steps.append(("SETACL", lambda c: c.setacl(archive, next_user,
                                                     "lrs")))
    with source.imap(user) as conn:
        for what, step in steps:
            check_ok(*step(conn), what)
