#!/usr/bin/env python3
"""cairnctl restore reading users from a running cairn cluster (no
--data-dir), into a real Cyrus 3.6 replica.

SOURCE (imapd, lmtpd, timsieved) -> real sync_client -u -> cairn-router ->
3 cairn-nodes (2 replicas per user).  Then, from the admin's side, with
only cluster.conf: `cairnctl restore --user U --server REPLICA` for each
user; the nodes answer GET USER / GET FULLMAILBOX / BODY / SIEVE
(node/server_restore.c).  dave has bodies of 1.5 MB and 5 MB (several
ZeroMQ frames).  carol is restored while her first ring replica is
stopped: the second must serve (named on stderr).  The REPLICA must then
hold what the SOURCE holds, field by field (mailboxes, uniqueids,
UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, UIDs, flags, internaldates, message
bytes, subscriptions, non-owner seen state, sieve scripts and the active
one).  Prints the restore time and bytes per user.

usage: test_restore_remote.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402
from test_restore_cairn import contents, shared_flags, sieve_files  # noqa

STARTED = time.monotonic()
USERS = ["carol", "dan", "dave"]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def restore(cluster, server, password_file, user):
    r = cluster.cairnctl("restore", "--json", "--user", user, "--server",
                         server, "--authname", cyruslab.REPLICATION_USER,
                         "--password-file", password_file,
                         "--activate-sieve", "lab", "--timeout", "30",
                         timeout=120)
    return r, json.loads(r.stdout or "{}")


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=3, replicas=2) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        replica = lab.add_replica()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        labmail.populate(source, USERS, messages=6)
        source.deliver("dave", labmail.make_message("dave", 50, 1500000),
                       labmail.make_message("dave", 51, 5000000))
        for user in USERS:
            r = source.sync_client(users=[user], channel="cairn")
            expect(r.ok, "sync_client -u %s into the cairn cluster" % user, r)
        password_file = os.path.join(lab.dir, "restore.pw")
        with open(password_file, "w") as f:
            f.write(cyruslab.REPLICATION_PASSWORD + "\n")
        os.chmod(password_file, 0o600)
        server = "127.0.0.1:%d" % replica.ports["csync"]
        placement = cluster.ring_replicas(USERS)

        r, _ = restore(cluster, server, password_file, "nobody")
        expect(r.returncode == 66, "an unknown user: exit 66",
               r.stdout + r.stderr)
        figures = []
        for user in USERS:
            if user == "carol":
                cluster.stop_node(placement[user][0])
            begin = time.monotonic()
            r, summary = restore(cluster, server, password_file, user)
            seconds = time.monotonic() - begin
            expect(r.returncode == 0 and summary.get("ok"),
                   "cairnctl restore %s from the cluster (no --data-dir)"
                   % user, r.stdout + r.stderr)
            served = re.search(r"reading %s from node (\S+)" % user, r.stderr)
            want = placement[user][1 if user == "carol" else 0]
            expect(served and served.group(1) == want,
                   "%s served by %s (ring %s%s)" % (
                       user, want, placement[user],
                       ", first replica stopped" if user == "carol" else ""),
                   r.stderr)
            expect(summary["meta_refused"] == 0 and
                   summary["mailboxes_fallback"] == 0,
                   "%s: every mailbox by APPLY, all meta accepted" % user,
                   r.stdout)
            figures.append("%s %.2f s, %d bodies, %d bytes uploaded" % (
                user, seconds, summary["messages_uploaded"],
                summary["bytes_uploaded"]))
            if user == "carol":
                cluster.start_node(placement[user][0])

        want = source.snapshot(users=USERS)
        got = replica.snapshot(users=USERS)
        expect(sorted(got) == sorted(want), "same mailboxes (%d)" % len(want),
               "source %s\nreplica %s" % (sorted(want), sorted(got)))
        for name in sorted(want):
            expect(want[name] == got[name],
                   "%s equal on the replica (%d messages)" % (
                       name, len(want[name]["messages"])),
                   json.dumps([want[name], got[name]], indent=1))
        for user in USERS:
            src, dst = contents(source, user), contents(replica, user)
            expect(src == dst, "%s: internaldates and message bytes equal "
                   "(%d messages)" % (user, sum(len(v) for v in src.values())),
                   "source %s\nreplica %s" % (src, dst))
            expect(source.subscriptions(user) == replica.subscriptions(user),
                   "%s: subscriptions equal" % user)
        for n, reader in enumerate(USERS):
            owner = USERS[(n - 1) % len(USERS)]
            want_flags = shared_flags(source, lab, reader, owner)
            got_flags = shared_flags(replica, lab, reader, owner)
            expect(got_flags == want_flags,
                   "%s's seen state on %s's Archive restored" % (reader, owner),
                   "source %s\nreplica %s" % (want_flags, got_flags))
        want_sieve = sieve_files(source)
        got_sieve = sieve_files(replica)
        expect(len(want_sieve) == 2 * len(USERS) and got_sieve == want_sieve,
               "sieve scripts restored and active (%d files)" %
               len(want_sieve),
               "source %s\nreplica %s" % (sorted(want_sieve),
                                          sorted(got_sieve)))
        for line in figures:
            print("# restore from the cluster: %s" % line)
        statuses = cluster.stop()
        expect(all(s == 0 for s in statuses.values()),
               "router and nodes exit 0 on SIGTERM %s" % statuses)
    print("test_restore_remote: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
