#!/usr/bin/env python3
"""The issue's rebalance test: a 4th node joins a live 3-node cairn
destination (2 replicas) while a real Cyrus 3.6 `sync_client -R` (rolling)
keeps replicating new mail.

Setup: a cyruslab SOURCE with channel "cairn" at a cairncluster of 4
nodes whose ring holds node1..node3 (node4 runs empty); every user is
synced once (`sync_client -u`), then rolling replication starts and a
thread keeps delivering new mail over LMTP.  `cairnctl ring add-node ...
-o new.ring` and `cairnctl rebalance -g 0` move the users; the router
refuses a held user's requests with NO IMAP_MAILBOX_LOCKED, which
sync_client retries.  Delivery stops, rolling replication catches up.

Afterwards: every user lives exactly on its new replicas, `cairnctl
verify` is ok everywhere, and every message the source holds (GUID, by
mailbox) is in every replica's index.  Figures: users moved, bytes, time,
NO answers the router gave for held users.

usage: test_rebalance_sync.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import livemove  # noqa: E402

STARTED = time.monotonic()
USERS = ["user%02d" % i for i in range(12)]


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
    with cairncluster.Cluster(binaries, nodes=4, replicas=2) as cluster, \
            cyruslab.Lab() as lab:
        r = cluster.cairnctl("ring", "create", cluster.ring_file, "-d",
                             "main", "-r", "2", "-n", "node1:100", "-n",
                             "node2:100", "-n", "node3:100")
        expect(r.returncode == 0, "3-node ring", r.stdout + r.stderr)
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        cyruslab.populate(source, USERS, messages=4, extras=False,
                          sieve=False)
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "initial sync_client -u of %d users" % len(USERS), r)

        rolling = source.start_rolling_sync("cairn")
        deliverer = livemove.Deliverer(source, USERS)
        deliverer.thread.start()
        time.sleep(1.0)
        new_ring = os.path.join(cluster.dir, "new.ring")
        r = cluster.cairnctl("ring", "add-node", cluster.ring_file,
                             "node4:100", "-o", new_ring)
        expect(r.returncode == 0, "ring add-node node4", r.stdout + r.stderr)
        t0 = time.monotonic()
        r = cluster.cairnctl("rebalance", "-d", "main", "-g", "0", new_ring,
                             timeout=180)
        seconds = time.monotonic() - t0
        expect(r.returncode == 0, "cairnctl rebalance with sync_client "
               "running (%.2fs): %s" % (seconds, r.stdout.strip()),
               r.stdout + r.stderr)
        summary = r.stdout.strip()
        time.sleep(1.0)
        errors = deliverer.finish()
        expect(not errors, "delivery went on (%d new messages)"
               % deliverer.count, errors)

        missing, sample, wanted, placement = livemove.wait_all_replicated(
            cluster, source, USERS)
        rolling.stop()
        expect(missing == 0, "every message the source holds (%d) is on "
               "every new replica" % wanted,
               "missing %d, e.g. %r\nsync_client:\n%s" % (
                   missing, sample, rolling.output()[-3000:]))
        holders = cluster.holders()
        for user in USERS:
            expect(holders.get(user) == sorted(placement[user]),
                   "%s is on exactly its new replicas %s"
                   % (user, placement[user]), "catalogs: %r" % holders)
        r = cluster.cairnctl("verify")
        expect(r.returncode == 0, "cairnctl verify: every replica ok",
               r.stdout + r.stderr)
        # The router does not log its NO answers; sync_client -v says
        # what it met (and it retried: every message arrived, above).
        output = rolling.output()
        refused = len(re.findall(r"being moved|locked", output, re.I))
        print("figures: %s; %d messages delivered during the run; %d "
              "'being moved'/'locked' lines in sync_client's output; test "
              "%.1fs" % (summary, deliverer.count, refused,
                         time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
