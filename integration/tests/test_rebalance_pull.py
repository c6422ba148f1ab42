#!/usr/bin/env python3
"""Node-to-node rebalance while a real Cyrus 3.6 sync_client keeps
replicating the moving users (issue 15 part 1).

A 4th node joins a live 3-node destination (2 replicas).  Rolling
replication (`sync_client -R`) runs and a thread keeps delivering new mail
to every user throughout.  One moving user ("big") gets a 5 MB message
first, so that its copy to node4 takes seconds at `--rate 512K` and goes
through both phases: the bulk copied while big keeps writing, then only
the tail under the hold.

1. `cairnctl rebalance --rate 512K` starts; once node4's spool holds part
   of big's copy (an observable event: the partial pull file grows), the
   node the copy reads from is SIGKILLed.  The move of big fails cleanly:
   cairnctl names the user and the source, exits 1, and big is still on
   its old replicas, writable there (the router released it).
2. The source restarts; `cairnctl rebalance` runs again and finishes: big's
   copy resumes from the partial file (its node logs the pull done).
3. Delivery stops, rolling replication catches up.  Every message the
   source holds (by GUID) is on every new replica; every user lives on
   exactly its new replicas; `cairnctl verify` agrees; Cyrus's
   `ctl_backups verify` accepts every data file of every node.

Printed, not asserted: the longest hold of each run (a user's writes
refused at the router while its tail is copied), bytes, times.

usage: test_rebalance_pull.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import base64
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import livemove  # noqa: E402

STARTED = time.monotonic()
USERS = ["user%02d" % i for i in range(12)]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def wait_for(what, predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("never happened: %s" % what)
        time.sleep(0.05)


def big_message(user):
    """A 5 MB message whose body does not compress."""
    body = base64.encodebytes(os.urandom(3900 * 1024)).replace(b"\n",
                                                               b"\r\n")
    head = ("From: bulk@example.org\r\nTo: %s@cyruslab.example\r\n"
            "Subject: a big one\r\nMessage-ID: <big-%s@lab.example>\r\n"
            "Date: Mon, 02 Jun 2025 10:00:00 +0000\r\n\r\n" % (user, user))
    return head.encode() + body


def plan(cluster, new_ring):
    """{user: ([old replicas], [new replicas])} of `rebalance -n`."""
    r = cluster.cairnctl("rebalance", "-d", "main", "-n", new_ring)
    expect(r.returncode == 0, "dry run", r.stdout + r.stderr)
    moves = {}
    for line in r.stdout.splitlines():
        m = re.match(r"(\S+) \(\w+\): (\S+) -> (\S+)$", line)
        if m:
            moves[m.group(1)] = (m.group(2).split(","),
                                 m.group(3).split(","))
    return moves


def longest_hold(summary):
    m = re.search(r"longest hold (\d+) ms", summary)
    return int(m.group(1)) if m else -1


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
        new_ring = os.path.join(cluster.dir, "new.ring")
        r = cluster.cairnctl("ring", "add-node", cluster.ring_file,
                             "node4:100", "-o", new_ring)
        expect(r.returncode == 0, "ring add-node node4", r.stdout + r.stderr)
        moves = plan(cluster, new_ring)
        # the big user: one that gets a copy on node4
        big = next(u for u in USERS if u in moves and "node4" in moves[u][1]
                   and "node4" not in moves[u][0])
        big_source = moves[big][0][0]  # the mover reads the first old one
        source.deliver(big, big_message(big))
        r = source.sync_client([big], channel="cairn")
        expect(r.ok, "%s gets a 5 MB message" % big, r)

        rolling = source.start_rolling_sync("cairn")
        deliverer = livemove.Deliverer(source, USERS)
        deliverer.thread.start()
        time.sleep(1.0)

        # 1. the source of big's copy dies in the middle of it
        partial = os.path.join(cluster.data_dir("node4"), "spool",
                               "pull-" + big)
        run = subprocess.Popen(
            [binaries.cairnctl, "-c", cluster.config_path, "rebalance", "-d",
             "main", "-g", "0", "--rate", "512K", new_ring],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for("node4 receives part of %s's copy" % big,
                 lambda: os.path.exists(partial)
                 and os.path.getsize(partial) > 256 * 1024)
        offset = len(cluster.router_log())
        cluster.stop_node(big_source, how="kill")
        out, err = run.communicate(timeout=120)
        expect(run.returncode == 1, "the interrupted run exits 1 (a user "
               "failed): %s" % out.strip(), out + err)
        expect(re.search(r"pull of %s from node %s" % (big, big_source),
                         err) is not None,
               "cairnctl names the user and the source it lost", err)
        with open(new_ring + ".journal") as f:
            journal = f.read()
        expect("switched %s " % big not in journal,
               "%s was not switched" % big, journal)
        first_summary = out.strip()

        # 2. the source is back; the move resumes
        cluster.start_node(big_source)
        cluster.wait_node_up(big_source, offset)
        t0 = time.monotonic()
        r = cluster.cairnctl("rebalance", "-d", "main", "-g", "0", new_ring,
                             timeout=180)
        seconds = time.monotonic() - t0
        expect(r.returncode == 0, "the resumed rebalance finishes (%.2fs): %s"
               % (seconds, r.stdout.strip()), r.stdout + r.stderr)
        summary = r.stdout.strip()
        log4 = cluster.daemons["node4"].log()
        pulls = re.findall(r"%s #\d+\] pull from %s: done, (\d+) bytes.*"
                           % (big, big_source), log4)
        expect(len(pulls) >= 2, "node4 pulled %s from %s while live and "
               "then its tail: %s" % (big, big_source, "; ".join(
                   re.findall(r"%s #\d+\] (pull from .*)" % big, log4))),
               log4[-3000:])

        time.sleep(1.0)
        errors = deliverer.finish()
        expect(not errors, "delivery went on (%d new messages)"
               % deliverer.count, errors)

        # 3. nothing acknowledged is missing; Cyrus accepts every file
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
        files = cluster.user_files()
        for node in cluster.node_names:
            mapping = files.get(node, {})
            if not mapping:
                continue
            report = backupcheck.check_backup_files(mapping, list_all=False)
            expect(report.accepted, "Cyrus's ctl_backups verify accepts "
                   "every file on %s (%d users)" % (node, len(mapping)),
                   "\n".join("%s: %s" % (u, c.verify_status)
                             for u, c in report.users.items()))
        print("figures: interrupted run: %s; resumed run: %s; longest hold "
              "%d ms (interrupted run) and %d ms (resumed run); %d messages "
              "delivered during the runs; test %.1fs"
              % (first_summary, summary, longest_hold(first_summary),
                 longest_hold(summary), deliverer.count,
                 time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
