#!/usr/bin/env python3
"""cairnctl import + cairnctl restore against real Cyrus 3.6.

SOURCE (imapd, lmtpd, timsieved) -> sync_client -u -> BACKUP (backupd);
`cairnctl import` adopts backupd's files into a cairn data directory
(its rebuilt index must equal backupd's row for row); `cairnctl restore`
puts each user into the REPLICA's sync_server: carol with RESTORE
MAILBOX (what Cyrus's `restore -U` sends), dan with APPLY MAILBOX (what
sync_client sends, cairnctl's default).  Each user's last messages were
expunged and purged before the backup, so the backup's LAST_UID lies
past its last record: only APPLY brings UIDNEXT back (RESTORE gives
last record + 1, printed as a measurement, not asserted: a UID reuse).
The REPLICA must then hold what the SOURCE holds,
field by field: mailboxes, uniqueids, UIDVALIDITY, UIDs, flags,
internaldates, message bytes, subscriptions, non-owner seen state (a
\\Seen the other user set), the compiled sieve script and which one is
active (and, in APPLY mode, HIGHESTMODSEQ and UIDNEXT too).
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cyruslab  # noqa: E402
import labmail  # noqa: E402

STARTED = time.monotonic()
# --mode per user; None: cairnctl's default (apply, with fallback)
MODES = {"carol": "restore", "dan": "apply", "erin": None}
USERS = sorted(MODES)
COMPARED = ["carol", "dan"]  # erin's INBOX is taken on the replica first
FETCH = re.compile(rb"UID (\d+) INTERNALDATE \"([^\"]+)\" BODY\[\] \{(\d+)\}")


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def cairnctl():
    build = os.environ.get("CAIRN_BUILD_DIR",
                           os.path.join(HERE, "..", "..", "build"))
    path = os.path.join(build, "ops", "cairnctl")
    if not os.access(path, os.X_OK):
        print("cairnctl not built at %s" % path)
        sys.exit(77)
    return path


def run(*args):
    proc = subprocess.run([cairnctl()] + list(args), capture_output=True,
                          text=True, timeout=60)
    return proc


def contents(server, user):
    """{mailbox: [(uid, internaldate, sha1 of the bytes)]} as user sees it,
    read over IMAP (EXAMINE, FETCH INTERNALDATE BODY.PEEK[])."""
    result = {}
    conn = server.imap(user)
    try:
        typ, data = conn.list('""', "*")
        cyruslab.check_ok(typ, data, "LIST")
        for line in data:
            name = labmail.list_name(line)
            typ, data = conn.select('"%s"' % name, readonly=True)
            cyruslab.check_ok(typ, data, "EXAMINE")
            if int(data[0]) == 0:
                result[name] = []
                continue
            typ, data = conn.uid("FETCH", "1:*", "(INTERNALDATE BODY.PEEK[])")
            cyruslab.check_ok(typ, data, "FETCH")
            rows = []
            for item in data:
                if not isinstance(item, tuple):
                    continue
                match = FETCH.search(item[0])
                rows.append((int(match.group(1)), match.group(2).decode(),
                             hashlib.sha1(item[1]).hexdigest(),
                             len(item[1])))
            result[name] = sorted(rows)
    finally:
        conn.logout()
    return result


def purge_last_messages(source):
    """A 7th message per user, expunged, and every expunged record purged
    (cyr_expire -X 0): the backup then holds LAST_UID 7 with no record
    above uid 5, which RESTORE MAILBOX cannot reproduce (UIDNEXT 6)."""
    for user in USERS:
        source.deliver(user, labmail.make_message(user, 7))
        conn = source.imap(user)
        try:
            cyruslab.check_ok(*conn.select("INBOX"), "SELECT")
            cyruslab.check_ok(*conn.uid("STORE", "7", "+FLAGS.SILENT",
                                        r"(\Deleted)"), "STORE")
            cyruslab.check_ok(*conn.expunge(), "EXPUNGE")
        finally:
            conn.logout()
    r = source.run_tool("cyr_expire", "-X", "0")
    expect(r.ok, "cyr_expire -X 0 purged the expunged records", r)


def occupy_inbox(replica, lab, user):
    """user's INBOX made on the replica with a message of its own: another
    uniqueid, not empty, so APPLY MAILBOX gets IMAP_MAILBOX_MOVED."""
    conn = replica.imap()
    try:
        cyruslab.check_ok(*conn.create(lab.user_mailbox(user)), "CREATE")
    finally:
        conn.logout()
    conn = replica.imap(user)
    try:
        cyruslab.check_ok(*conn.append("INBOX", None, None,
                                       labmail.make_message(user, 99)),
                          "APPEND")
    finally:
        conn.logout()


def restore(data_dir, server, password_file, user, mode):
    args = ["restore", "--json", "--data-dir", data_dir, "--user", user,
            "--server", server, "--authname", cyruslab.REPLICATION_USER,
            "--password-file", password_file, "--activate-sieve", "lab"]
    if mode:
        args += ["--mode", mode]
    else:  # and the other session options: PLAIN, no compression
        args += ["--mechanism", "PLAIN", "--no-compress"]
    p = run(*args)
    return p, json.loads(p.stdout or "{}")


def shared_flags(server, lab, reader, owner):
    """Flags reader sees on owner's Archive (shared lrs by populate):
    reader's own \\Seen there lives in reader's seen db."""
    conn = server.imap(reader)
    try:
        name = '"%s"' % lab.user_mailbox(owner, "Archive")
        cyruslab.check_ok(*conn.select(name, readonly=True), "EXAMINE")
        typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
        cyruslab.check_ok(typ, data, "FETCH")
        return sorted(line.decode() for line in data if line)
    finally:
        conn.logout()


def sieve_files(instance):
    """{path under sieve/: bytes, or "-> target" for the active link}.
    Cyrus 3.6 keeps a user's scripts in the #sieve mailbox and compiles
    them into sieve/uuid/<x>/<y>/<mailbox uniqueid>/NAME.bc; "defaultbc"
    links to the active one. Same uniqueid, same paths."""
    found = {}
    top = os.path.join(instance.dir, "sieve")
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            key = os.path.relpath(path, top)
            if os.path.islink(path):
                found[key] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    found[key] = f.read()
    return found


def main():
    cyruslab.skip_unless_runnable()
    cairnctl()
    with cyruslab.Lab() as lab:
        backup = lab.add_backup()
        replica = lab.add_replica()
        source = lab.add_source(channels={"backup": backup.csync_address})
        lab.start()
        labmail.populate(source, USERS, messages=6)
        purge_last_messages(source)
        for user in USERS:
            r = source.sync_client(users=[user], channel="backup")
            expect(r.ok, "sync_client -u %s into backupd" % user, r)
        files = backup.backup_files()
        data_dir = os.path.join(lab.dir, "cairn-data")
        password_file = os.path.join(lab.dir, "restore.pw")
        with open(password_file, "w") as f:
            f.write(cyruslab.REPLICATION_PASSWORD + "\n")
        os.chmod(password_file, 0o600)

        for user in USERS:
            p = run("import", "--json", "--data-dir", data_dir, "--user",
                    user, files[user])
            report = json.loads(p.stdout or "{}")
            expect(p.returncode == 0 and report.get("outcome") == "imported",
                   "cairnctl import %s" % user, p.stdout + p.stderr)
            expect(report["compared"] and report["differences"] == 0,
                   "cairn's rebuilt index of %s equals backupd's (%s)" % (
                       user, ", ".join("%s %d" % (t, v["rows"]) for t, v in
                                       report["tables"].items())),
                   p.stdout)
        again = run("import", "--data-dir", data_dir, "--user", USERS[0],
                    files[USERS[0]])
        expect(again.returncode == 1, "a second import of a user is refused",
               again.stdout + again.stderr)

        server = "127.0.0.1:%d" % replica.ports["csync"]
        wrong = os.path.join(lab.dir, "wrong.pw")
        with open(wrong, "w") as f:
            f.write("not-the-password\n")
        p, summary = restore(data_dir, server, wrong, "carol", "restore")
        expect(p.returncode == 1 and not summary.get("ok") and
               "authentication" in p.stderr.lower(),
               "a wrong password is refused (exit 1), nothing restored",
               p.stdout + p.stderr)
        occupy_inbox(replica, lab, "erin")
        timings = {}
        for user in USERS:
            begin = time.monotonic()
            p, summary = restore(data_dir, server, password_file, user,
                                 MODES[user])
            timings[user] = time.monotonic() - begin
            expect(p.returncode == 0 and summary.get("ok"),
                   "cairnctl restore %s (%s mode): %s" % (
                       user, MODES[user] or "default", p.stdout.strip()),
                   p.stderr)
            session = re.search(r"connected to \S+ \(([^)]*)\)", p.stderr)
            # restore says whether the session runs over TLS; this
            # replica offers no STARTTLS
            expect(session and session.group(1) == (
                "PLAIN, no TLS" if MODES[user] is None else
                "SCRAM-SHA-512, compressed, no TLS"),
                "%s: session %s" % (user, session and session.group(1)),
                p.stderr)
            fallbacks = 1 if user == "erin" else 0
            expect(summary["mailboxes_fallback"] == fallbacks and
                   summary["meta_sent"] == 5 and summary["meta_refused"] == 0,
                   "%s: %d fallback to RESTORE MAILBOX; 2 SUB, SEEN, SIEVE, "
                   "ACTIVATE_SIEVE accepted" % (user, fallbacks), p.stdout)

        want = source.snapshot(users=COMPARED)
        got = replica.snapshot(users=COMPARED)
        expect(sorted(got) == sorted(want), "same mailboxes (%d)" % len(want),
               "source %s\nreplica %s" % (sorted(want), sorted(got)))
        fields = ("uniqueid", "uidvalidity", "messages")
        exact = ("uidnext", "highestmodseq")
        for name in sorted(want):
            owner = lab.mailbox_owner(name)
            compared = fields + (exact if MODES[owner] == "apply" else ())
            differ = {k: (want[name][k], got[name][k]) for k in compared
                      if want[name][k] != got[name][k]}
            expect(not differ, "%s: %s equal (%d messages)" % (
                name, "/".join(compared), len(want[name]["messages"])),
                json.dumps(differ, indent=1))
            if MODES[owner] == "restore":
                print("# %s (restore mode): uidnext %d -> %d, highestmodseq"
                      " %d -> %d" % (name, want[name]["uidnext"],
                                     got[name]["uidnext"],
                                     want[name]["highestmodseq"],
                                     got[name]["highestmodseq"]))
        # APPLY is idempotent: restoring dan again changes nothing
        p, summary = restore(data_dir, server, password_file, "dan", "apply")
        again = replica.snapshot(users=["dan"])
        expect(p.returncode == 0 and summary["mailboxes_fallback"] == 0 and
               again == {k: v for k, v in got.items()
                         if lab.mailbox_owner(k) == "dan"},
               "restoring dan a second time (apply) leaves the replica as it "
               "was", p.stdout)
        # erin: INBOX appended after the replica's own message, rest exact
        want_erin = source.snapshot(users=["erin"])
        got_erin = replica.snapshot(users=["erin"])
        inbox = lab.user_mailbox("erin")
        src_guids = [m["guid"] for m in want_erin[inbox]["messages"]]
        dst_guids = [m["guid"] for m in got_erin[inbox]["messages"]]
        expect(len(dst_guids) == len(src_guids) + 1 and
               dst_guids[1:] == src_guids and
               got_erin[inbox]["uniqueid"] != want_erin[inbox]["uniqueid"],
               "erin's taken INBOX got the backup's %d messages appended after"
               " its own (RESTORE MAILBOX fallback)" % len(src_guids),
               json.dumps([want_erin[inbox], got_erin[inbox]], indent=1))
        for name in sorted(want_erin):
            if name != inbox:
                expect(want_erin[name] == got_erin[name],
                       "%s restored exactly (APPLY)" % name,
                       json.dumps([want_erin[name], got_erin[name]]))
        for user in COMPARED:
            src, dst = contents(source, user), contents(replica, user)
            expect(src == dst, "%s: internaldates and message bytes equal "
                   "(%d messages)" % (user, sum(len(v) for v in src.values())),
                   "source %s\nreplica %s" % (src, dst))
            expect(source.subscriptions(user) == replica.subscriptions(user),
                   "%s: subscriptions equal %s" % (
                       user, source.subscriptions(user)))
        for n, reader in enumerate(USERS):
            owner = USERS[(n - 1) % len(USERS)]
            want_flags = shared_flags(source, lab, reader, owner)
            got_flags = shared_flags(replica, lab, reader, owner)
            expect(got_flags == want_flags and "\\Seen" in want_flags[0],
                   "%s's seen state on %s's Archive restored: %s" % (
                       reader, owner, got_flags),
                   "source %s\nreplica %s" % (want_flags, got_flags))
        # by content: erin's directory is named after her replica INBOX
        want_sieve = sorted((os.path.basename(k), v)
                            for k, v in sieve_files(source).items())
        got_sieve = sorted((os.path.basename(k), v)
                           for k, v in sieve_files(replica).items())
        expect(len(want_sieve) == 2 * len(USERS) and got_sieve == want_sieve,
               "sieve scripts restored and active (%s)" % sorted(
                   name for name, _content in want_sieve),
               "source %s\nreplica %s" % (want_sieve, got_sieve))
        print("# restore seconds: %s" % ", ".join(
            "%s %.2f" % (u, t) for u, t in sorted(timings.items())))
    print("test_restore_cairn: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
