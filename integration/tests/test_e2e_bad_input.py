#!/usr/bin/env python3
"""Bad input against a live cairn-router (3 nodes, 2 replicas) that holds
real backups.

Two users are backed up with real `sync_client -u`; then a raw csync
client (cairncluster.CsyncClient, SASL PLAIN, which the test channel
offers after SCRAM-SHA-512) sends, each on its own connection: commands
before authentication, a wrong password, unknown commands, malformed
dlists, a literal over [limits] max_literal (4K here), an APPLY MESSAGE
whose bytes do not match its GUID, user names with ".." or "/".  Each
must get its refusal (NO/BAD, the exact completion is asserted), and the
session must go on (NOOP answered) or end cleanly (closed, never hung);
after each case no file appeared or changed in any node's data directory,
every replica's index is as before and `cairnctl verify` is ok.  At the
end Cyrus's own ctl_backups verify accepts every replica and a new
sync_client run is still clean.

usage: test_e2e_bad_input.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import base64
import hashlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = ["alice", "bob"]
PLAIN = object()    # marker: log in with the right password first
OTHER = hashlib.sha1(b"not these bytes").hexdigest()

# (what, log in first?, [(command bytes, expected completion prefix)],
#  after: "continues" (NOOP answered) or "closes" or "either")
CASES = [
    ("commands before authentication", False, [
        (b"GET USER alice", b"NO"),
        (b"APPLY SUB %(USERID alice MBOXNAME user.alice.Evil)", b"NO"),
        (b"APPLY MESSAGE (%{default " + OTHER.encode() + b" 3}\r\nabc)",
         b"NO"),
    ], "continues"),
    ("a wrong password", False, [
        (b"AUTHENTICATE PLAIN " + base64.b64encode(
            b"\0repluser\0wrong-password"), b"NO"),
        (b"GET USER alice", b"NO"),
    ], "continues"),
    ("unknown commands", PLAIN, [
        (b"FROB x", b"BAD"),
        # backupd: NO IMAP_PROTOCOL_ERROR for an unknown APPLY or GET
        (b"APPLY FROBNICATE %(USERID alice)", (b"NO", b"BAD")),
        (b"GET NONSENSE alice", (b"NO", b"BAD")),
    ], "continues"),
    ("malformed dlists", PLAIN, [
        (b"APPLY MAILBOX %(UNIQUEID x))", b"BAD"),
        (b"APPLY MAILBOX %(UNIQUEID)", b"BAD"),
        (b"APPLY MAILBOX )(", b"BAD"),
        (b"APPLY SUB %(USERID {3+}\r\nali MBOXNAME)", b"BAD"),
        (b"APPLY SUB %(USERID {x}\r\nali)", b"BAD"),
    ], "continues"),
    ("a literal over max_literal (4K)", PLAIN, [
        (b"APPLY SIEVE %(USERID alice FILENAME big.script LAST_UPDATE 1 "
         b"CONTENT {5000}", b"BAD"),
    ], "either"),
    ("an APPLY MESSAGE whose bytes do not match its GUID", PLAIN, [
        (b"GET USER alice", b"OK"),
        (b"APPLY MESSAGE (%{default " + OTHER.encode() +
         b" 10}\r\n0123456789)", b"NO"),
    ], "continues"),
    ("a GET MAILBOXES spanning two users", PLAIN, [
        (b"GET MAILBOXES (user.alice user.bob)",
         b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
        (b"GET MAILBOXES (user.alice.Work user.alice)", b"OK"),
    ], "continues"),
    ("user names with '..' or '/'", PLAIN, [
        (b"GET USER ..", b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
        (b"GET USER ../alice", b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
        (b"GET USER a/b", b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
        (b"GET META ../../etc", b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
        (b"APPLY SUB %(USERID ../x MBOXNAME user.x)",
         b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
        (b"GET MAILBOXES (user.a/b)", b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
        (b"APPLY UNMAILBOX user.../x", b"NO IMAP_PROTOCOL_BAD_PARAMETERS"),
    ], "continues"),
]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def data_tree(cluster):
    """{path: (size, mtime_ns)} of every file under the nodes' data dirs."""
    tree = {}
    top = os.path.join(cluster.dir, "data")
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            st = os.stat(path)
            tree[os.path.relpath(path, top)] = (st.st_size, st.st_mtime_ns)
    return tree


def stored_state(cluster):
    return {(node, user): cairncluster.index_state(path)
            for node, files in cluster.user_files().items()
            for user, path in files.items()}


def run_case(cluster, case):
    what, login, steps, after = case
    client = cairncluster.CsyncClient(cluster.csync_port)
    try:
        if login is PLAIN:
            reply = client.login_plain(cluster.sasl_user,
                                       cluster.sasl_password)
            expect(reply[-1] == b"OK Success (no protection)",
                   "%s: login" % what, repr(reply))
        for raw, wanted in steps:
            reply = client.command(raw)
            last = reply[-1]
            expect(last is not None and last.startswith(wanted),
                   "%s: %r -> %r" % (what, raw[:50], last),
                   "wanted %r, got %r" % (wanted, reply))
        if after in ("continues", "either") and not client.closed():
            reply = client.command(b"NOOP")
            expect(reply[-1] == b"OK Noop completed",
                   "%s: the session continues (NOOP answered)" % what,
                   repr(reply))
        else:
            expect(client.closed(), "%s: the router closed the connection "
                   "cleanly" % what)
    finally:
        client.close()


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, limits={"max_literal": "4K"}) \
            as cluster, cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        cyruslab.populate(source, USERS, messages=5)
        r = source.sync_client(users=USERS, channel="cairn")
        expect(r.ok, "sync_client -u %s into cairn" % " ".join(USERS), r)
        tree, state = data_tree(cluster), stored_state(cluster)
        expect(len(state) == 2 * len(USERS), "%d replicas stored"
               % len(state), repr(sorted(state)))
        for case in CASES:
            run_case(cluster, case)
            expect(cluster.daemons["router"].running,
                   "%s: the router is still running" % case[0])
            now = data_tree(cluster)
            expect(now == tree, "%s: no file under the data dirs appeared "
                   "or changed" % case[0],
                   "new %r\ngone %r\nchanged %r" % (
                       sorted(set(now) - set(tree)),
                       sorted(set(tree) - set(now)),
                       sorted(k for k in tree if k in now and
                              now[k] != tree[k])))
            expect(stored_state(cluster) == state,
                   "%s: every replica's index is as before" % case[0])
            r = cluster.cairnctl("verify", "-q", "-f", "-r",
                                 cluster.ring_file, *USERS)
            expect(r.returncode == 0, "%s: cairnctl verify --full ok"
                   % case[0], r.stdout + r.stderr)
        log = cluster.router_log()
        expect("exceeds limit 4096" in log,
               "the router logged the literal over the limit")
        for node, files in cluster.user_files().items():
            report = backupcheck.check_backup_files(files)
            expect(report.accepted, "Cyrus's ctl_backups verify accepts %s's"
                   " files of %s" % (node, sorted(files)),
                   "\n".join("%s: %s" % (u, c.verify_status)
                             for u, c in report.users.items()))
        r = source.sync_client(users=USERS, channel="cairn")
        expect(r.ok and stored_state(cluster) == state,
               "a new sync_client -u run is clean and changes nothing", r)
        statuses = cluster.stop()
        expect(all(s == 0 for s in statuses.values()),
               "router and nodes exit 0 on SIGTERM %s" % statuses)
    print("test_e2e_bad_input: passed in %.1fs" % (time.monotonic() -
                                                   STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
