#!/usr/bin/env python3
"""Replicas of a user hold the same facts, row for row (issue 11, DESIGN.md
"One time per update"): the router stamps each update once and every
replica, and every copy rebalance makes, writes that stamp.

A cyruslab SOURCE replicates 6 users (4 messages, folders, flags, moves,
an expunge, subscriptions, a sieve script) into a cairncluster of 4 nodes
whose ring holds node1..node3, 2 replicas, ack all; then every user
expunges a message, deletes a folder and unsubscribes one, and
sync_client -u runs again.  Asserted: for every user, both replicas'
indexes are equal row for row and column by column (index_rows: every
mailbox, record, message, subscription, seen and sieve row by natural
keys, expunged/deleted/unsubscribed times included) and those times
exist (the test would compare nothing otherwise); `cairnctl verify`,
whose digest covers the times, agrees.  Then node4 joins (`cairnctl ring
add-node`, `cairnctl rebalance`): the moved copies equal their peers row
for row again, and verify agrees.

usage: test_replicas_agree.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402

STARTED = time.monotonic()
USERS = ["user%02d" % i for i in range(6)]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def change_everyone(source):
    """Each user expunges INBOX uid 3, deletes Archive, unsubscribes
    Work: updates that write expunged, deleted and unsubscribed times."""
    sep = source.lab.separator
    for user in USERS:
        with source.imap(user) as conn:
            labmail.check_ok(*conn.select("INBOX"), "SELECT")
            labmail.check_ok(*conn.uid("STORE", "3", "+FLAGS.SILENT",
                                       r"(\Deleted)"), "STORE")
            labmail.check_ok(*conn.expunge(), "EXPUNGE")
            labmail.check_ok(*conn.delete("INBOX%sArchive" % sep), "DELETE")
            labmail.check_ok(*conn.unsubscribe("INBOX%sWork" % sep),
                             "UNSUBSCRIBE")


def replicas_agree(cluster, what):
    """Every user's replicas (by the ring) have equal index rows; returns
    how many time values were compared."""
    placement = cluster.ring_replicas(USERS)
    files = cluster.user_files()
    times = 0
    for user in USERS:
        rows = []
        for node in placement[user]:
            path = files.get(node, {}).get(user)
            expect(path is not None, "%s: %s holds %s" % (what, node, user),
                   "catalogs: %r" % cluster.holders())
            rows.append((node, cairncluster.index_rows(path)))
        first_node, first = rows[0]
        for node, other in rows[1:]:
            diff = cairncluster.index_row_differences(first, other)
            expect(not diff, "%s: %s on %s and %s: equal row for row"
                   % (what, user, first_node, node), "\n".join(diff))
        times += sum(1 for r in first["record"] if r[-1] is not None)
        times += sum(1 for r in first["mailbox"] if r[-1] is not None)
        times += sum(1 for r in first["subscription"] if r[-1] is not None)
    return times


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=4, replicas=2) as cluster, \
            cyruslab.Lab() as lab:
        r = cluster.cairnctl("ring", "create", cluster.ring_file, "-d",
                             "main", "-r", "2", "-n", "node1:100", "-n",
                             "node2:100", "-n", "node3:100")
        expect(r.returncode == 0, "3-node ring", r.stdout + r.stderr)
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        labmail.populate(source, USERS, messages=5)
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "first sync_client -u of %d users" % len(USERS), r)
        change_everyone(source)
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "second sync_client -u (expunge, delete, unsubscribe)",
               r)
        times = replicas_agree(cluster, "after sync")
        expect(times >= 3 * len(USERS), "%d expunged/deleted/unsubscribed "
               "times compared" % times)
        r = cluster.cairnctl("verify")
        expect(r.returncode == 0, "cairnctl verify: replicas agree",
               r.stdout + r.stderr)

        new_ring = os.path.join(cluster.dir, "new.ring")
        r = cluster.cairnctl("ring", "add-node", cluster.ring_file,
                             "node4:100", "-o", new_ring)
        expect(r.returncode == 0, "ring add-node node4", r.stdout + r.stderr)
        r = cluster.cairnctl("rebalance", "-d", "main", "-g", "0", new_ring,
                             timeout=180)
        expect(r.returncode == 0, "cairnctl rebalance: %s" % r.stdout.strip(),
               r.stdout + r.stderr)
        replicas_agree(cluster, "after rebalance")
        r = cluster.cairnctl("verify")
        expect(r.returncode == 0, "cairnctl verify after rebalance",
               r.stdout + r.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
