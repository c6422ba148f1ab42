#!/usr/bin/env python3
"""`cairnctl repair` (issue 11, part 2): a replica that missed updates is
brought to its peers' state node to node, not by the user's next sync.

A cyruslab SOURCE replicates 4 users into a cairncluster of 3 nodes,
3 replicas, ack quorum (2 of 3).  node3 is stopped with SIGSTOP (it hangs
with its connections open, as behind a cut link); every user gets new
mail and expunges a message, and sync_client -u runs: every user is
replicated (quorum) and the router marks node3 behind.  node3 comes back
(SIGCONT; the test waits for the router's "node node3 is up" line).
Asserted: `cairnctl verify` finds the replicas disagreeing (exit 1) before
the repair; `cairnctl repair -d main` copies node3's lagging users from a
good replica (exit 0, copies printed), no sync_client ran since;
`cairnctl verify` then agrees (exit 0); every replica's index equals its
peers' row for row; and Cyrus's `ctl_backups verify` accepts every
replica's file.

usage: test_repair.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402

STARTED = time.monotonic()
USERS = ["user%02d" % i for i in range(4)]
LAGGING = "node3"


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(
            binaries, nodes=3, replicas=3,
            destination_settings={"ack": "quorum"},
            router_settings={"node_answer_timeout": "2s"}) as cluster, \
            cyruslab.Lab() as lab:
        r = cluster.cairnctl("ring", "create", cluster.ring_file, "-d",
                             "main", "-r", "3", "-n", "node1:100", "-n",
                             "node2:100", "-n", "node3:100")
        expect(r.returncode == 0, "3-node ring, 3 replicas",
               r.stdout + r.stderr)
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        labmail.populate(source, USERS, messages=4, sieve=False)
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "first sync_client -u", r)
        r = cluster.cairnctl("verify")
        expect(r.returncode == 0, "verify agrees before the fault",
               r.stdout + r.stderr)

        cluster.stop_node(LAGGING, how="pause")
        for user in USERS:
            source.deliver(user, labmail.make_message(user, 50))
            with source.imap(user) as conn:
                labmail.check_ok(*conn.select("INBOX"), "SELECT")
                labmail.check_ok(*conn.uid("STORE", "1", "+FLAGS.SILENT",
                                           r"(\Deleted)"), "STORE")
                labmail.check_ok(*conn.expunge(), "EXPUNGE")
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "sync_client -u with %s stopped (ack quorum)"
               % LAGGING, r)
        offset = len(cluster.router_log())
        cluster.stop_node(LAGGING, how="resume")
        cluster.wait_node_up(LAGGING, offset)
        r = cluster.cairnctl("verify")
        expect(r.returncode != 0, "verify sees %s disagree before the "
               "repair (exit %d)" % (LAGGING, r.returncode),
               r.stdout + r.stderr)

        r = cluster.cairnctl("repair", "-d", "main", timeout=120)
        expect(r.returncode == 0 and "<- " in r.stdout,
               "cairnctl repair: %s" % r.stdout.strip().replace("\n", "; "),
               r.stdout + r.stderr)
        r = cluster.cairnctl("verify")
        expect(r.returncode == 0, "verify agrees after the repair",
               r.stdout + r.stderr)
        files = cluster.user_files()
        for user in USERS:
            rows = {node: cairncluster.index_rows(files[node][user])
                    for node in cluster.node_names}
            for node in cluster.node_names[1:]:
                diff = cairncluster.index_row_differences(rows["node1"],
                                                          rows[node])
                expect(not diff, "%s: node1 and %s equal row for row"
                       % (user, node), "\n".join(diff))
        for node in cluster.node_names:
            mapping = {user: files[node][user] for user in USERS}
            report = backupcheck.check_backup_files(mapping, list_all=False)
            expect(report.accepted, "Cyrus's ctl_backups verify accepts "
                   "every file on %s" % node,
                   "\n".join("%s: %s" % (u, c.verify_status)
                             for u, c in report.users.items()))
        r = cluster.cairnctl("repair", "-d", "main")
        expect(r.returncode == 0 and "repaired 0" in r.stdout,
               "a second repair finds nothing to do: %s" % r.stdout.strip(),
               r.stdout + r.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
