#!/usr/bin/env python3
"""A node out of disk (issue 11, item 4): a clear retryable NO naming the
node and the cause, no torn file, replication resumes by itself.

A cyruslab SOURCE replicates 3 users into a cairncluster of 2 nodes, 2
replicas, ack all.  node2's data directory is a small tmpfs the test
mounts (and unmounts); exit 77 with a reason when mount is not permitted.

1. Disk full: node2's [node] reserve is 0, and one user gets mail of
   random (incompressible) bodies larger than node2's free space.
   `sync_client -u` of 1.5 MB a pass until one fails; Cyrus's log holds the router's NO: retryable
   (IMAP_MAILBOX_LOCKED), naming node2 and "out of disk space".  While the
   disk is still full, Cyrus's `ctl_backups verify` accepts every file on
   node2 (a failed append was rolled back).  The tmpfs is made larger
   (remount, as an operator frees space); the next `sync_client -u` exits
   0 with nothing else done, `cairnctl verify` agrees, Cyrus accepts every
   file on both nodes.
2. Reserve: node2 restarted with reserve larger than its free space.
   `cairnctl status` says "disk below reserve" on node2's line; a sync
   gets the retryable NO naming node2 and "disk below reserve"; with the
   reserve back to 1M (restart) the next sync exits 0 and verify agrees.

usage: test_disk_full.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root, Cyrus is not installed, or tmpfs
cannot be mounted.
"""
import base64
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402

STARTED = time.monotonic()
USERS = ["dana", "eric", "fay"]
FULL = "node2"
SMALL = "6m"     # node2's volume during the fault
LARGE = "256m"   # ... once space returns
SEED = int(os.environ.get("CAIRN_TEST_SEED", "1117"))


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def random_message(rng, user, index, size):
    """A message whose body is base64 of random bytes: gzip cannot shrink
    it much, so its size on the node is about its size here."""
    head = labmail.make_message(user, index, 200)
    data = base64.encodebytes(rng.randbytes(size * 3 // 4))
    return head + data.replace(b"\n", b"\r\n")


def mount_tmpfs(path, size):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size,
                        "tmpfs", path], capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def node_no(source, words):
    """The NO lines in Cyrus's log since it started that carry words."""
    return [line for line in source.log().splitlines()
            if all(w in line for w in words)]


def check_files(cluster, nodes, what):
    files = cluster.user_files()
    for node in nodes:
        mapping = {user: path for user, path in files[node].items()}
        report = backupcheck.check_backup_files(mapping, list_all=False)
        expect(report.accepted and len(mapping) == len(USERS),
               "Cyrus's ctl_backups verify accepts every file on %s %s "
               "(%d users)" % (node, what, len(mapping)),
               "\n".join("%s: %s" % (u, c.verify_status)
                         for u, c in report.users.items()))


def restart_node(cluster, node):
    offset = len(cluster.router_log())
    cluster.stop_node(node, "term")
    cluster.start_node(node)
    cluster.wait_node_up(node, offset)


def disk_full(cluster, source, rng):
    r = cluster.cairnctl("status")
    free_before = r.stdout
    user = USERS[0]
    # 1.5 MB a pass: the request's spool file fits while the disk fills,
    # so the pass that fails runs out in the store's append (rolled back)
    for batch in range(12):
        messages = [random_message(rng, user, 100 + 5 * batch + i,
                                   300 * 1024) for i in range(5)]
        source.deliver(user, *messages)
        r = source.sync_client([user], channel="cairn")
        if not r.ok:
            break
    expect(not r.ok, "sync_client -u %s fails once %s's disk is full "
           "(pass %d of 1.5 MB)" % (user, FULL, batch + 1), r)
    lines = node_no(source, ["node %s is out of disk space" % FULL])
    expect(lines and any("MAILBOX_LOCKED" in line or "Mailbox is locked"
                         in line for line in lines),
           "sync_client's NO is retryable and names %s and the cause: %s"
           % (FULL, lines[-1].strip() if lines else None),
           source.log()[-3000:] + "\n" + free_before)
    check_files(cluster, [FULL], "while its disk is full")
    r = subprocess.run(["mount", "-o", "remount,size=%s" % LARGE,
                        cluster.data_dir(FULL)], capture_output=True,
                       text=True)
    expect(r.returncode == 0, "space returns on %s (tmpfs %s)"
           % (FULL, LARGE), r.stderr)
    begin = time.monotonic()
    r = source.sync_client([user], channel="cairn")
    expect(r.ok, "the next sync_client -u %s exits 0, nothing else done "
           "(%.1f s)" % (user, time.monotonic() - begin), r)
    r = cluster.cairnctl("verify")
    expect(r.returncode == 0, "cairnctl verify: the replicas agree",
           r.stdout + r.stderr)
    check_files(cluster, cluster.node_names, "after space returned")


def below_reserve(cluster, source, rng):
    user = USERS[1]
    cluster.set_node_settings(FULL, {"reserve": "1G"})
    restart_node(cluster, FULL)
    r = cluster.cairnctl("status")
    line = [x for x in r.stdout.splitlines() if x.startswith(FULL + " ")]
    expect(line and "disk below reserve" in line[0],
           "cairnctl status: %s" % (line[0].strip() if line else None),
           r.stdout + r.stderr)
    source.deliver(user, random_message(rng, user, 200, 2000))
    r = source.sync_client([user], channel="cairn")
    expect(not r.ok, "sync_client -u %s fails while %s is below its "
           "reserve" % (user, FULL), r)
    lines = node_no(source, ["node %s is out of disk space" % FULL,
                             "disk below reserve"])
    expect(lines, "the NO names %s and its reserve: %s"
           % (FULL, lines[-1].strip() if lines else None),
           source.log()[-3000:])
    cluster.set_node_settings(FULL, {"reserve": "1M"})
    restart_node(cluster, FULL)
    r = cluster.cairnctl("status")
    expect("disk below reserve" not in r.stdout,
           "cairnctl status no longer says disk below reserve", r.stdout)
    r = source.sync_client([user], channel="cairn")
    expect(r.ok, "with the reserve met the next sync_client -u %s "
           "exits 0" % user, r)
    r = cluster.cairnctl("verify")
    expect(r.returncode == 0, "cairnctl verify: the replicas agree",
           r.stdout + r.stderr)


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    print("# seed %d (CAIRN_TEST_SEED)" % SEED)
    rng = random.Random(SEED)
    with cairncluster.Cluster(binaries, nodes=2, replicas=2,
                              destination_settings={"ack": "all"},
                              router_settings={"node_timeout": "60s"}
                              ) as cluster, cyruslab.Lab() as lab:
        mounted, why = mount_tmpfs(cluster.data_dir(FULL), SMALL)
        if not mounted:
            print("SKIP: cannot mount a tmpfs for %s's data (%s)"
                  % (FULL, why))
            return 77
        try:
            cluster.set_node_settings(FULL, {"reserve": "0"})
            cluster.start()
            source = lab.add_source(channels={"cairn":
                                              cluster.csync_address})
            lab.start()
            labmail.populate(source, USERS, messages=4, sieve=False)
            r = source.sync_client(USERS, channel="cairn")
            expect(r.ok, "first sync_client -u of %d users" % len(USERS), r)
            disk_full(cluster, source, rng)
            below_reserve(cluster, source, rng)
        finally:
            cluster.stop()
            subprocess.run(["umount", cluster.data_dir(FULL)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
