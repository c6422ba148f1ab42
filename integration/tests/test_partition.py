#!/usr/bin/env python3
"""A replica partitioned away under rolling replication (issue 11,
item 2), healed by `cairnctl repair`.

A cyruslab SOURCE replicates 8 users into a cairncluster of 4 nodes, 3
replicas (node2 in a network namespace of the test's own, labnet.py).
Exit 77 when namespaces cannot be made here.

1. ack = quorum (2 of 3): a rolling `sync_client -R` runs; node2's link
   is cut (packets dropped, connections left open) and every user gets
   new mail in 3 rounds.  Writes go on: every new message reaches each
   user's replicas other than node2 (bodies read from their files, each
   checked against its GUID, named by Message-ID)
   while the link is down, and the rolling sync_client never exits.  The
   rolling client is stopped, the link healed (the router's "node node2
   is up" line).  `cairnctl verify` disagrees (node2's users lag);
   `cairnctl repair -d main` copies them from a peer; verify agrees;
   every source message is on every replica; Cyrus's
   `ctl_backups verify` accepts every file.
2. ack = all (router restarted): the link is cut again, every user gets
   a message and `sync_client -u` runs per user: exactly the users with a
   replica on node2 get a retryable NO (IMAP_MAILBOX_LOCKED in Cyrus's
   log), the others exit 0.  Healed, the failed users' next sync exits
   0 and verify agrees.

usage: test_partition.py [--router P] [--node P] [--cairnctl P]
"""
import os
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402
import labnet  # noqa: E402

STARTED = time.monotonic()
USERS = []  # pick_users(): 6 with a replica on VICTIM, 2 without
VICTIM = "node2"
DEADLINE = 180.0  # hang guard only


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def message_id(user, index):
    """What names a message in its stored body (LMTP adds headers, so the
    GUID Cyrus gives it is not the SHA-1 of what the test delivered)."""
    return b"Message-ID: <%s.%d@cyruslab.example>" % (user.encode(), index)


def held_guids(path):
    """Message-IDs of the bodies in a data file (each body checked
    against its GUID); None while the file is mid-write."""
    try:
        bodies = cairncluster.message_bodies(path).values()
    except (OSError, EOFError, zlib.error, cairncluster.ClusterError):
        return None
    return {line for body in bodies for line in body.split(b"\r\n")
            if line.startswith(b"Message-ID: ")}


def missing_on(cluster, sent, nodes_of, skip=()):
    """[(user, node, count)] of sent messages a replica does not hold."""
    files = cluster.user_files()
    gaps = []
    for user, guids in sent.items():
        for node in nodes_of[user]:
            if node in skip:
                continue
            path = files[node].get(user)
            held = held_guids(path) if path else set()
            lacking = guids - (held or set())
            if lacking:
                gaps.append((user, node, len(lacking)))
    return gaps


def wait_until(what, check):
    deadline = time.monotonic() + DEADLINE
    while True:
        result = check()
        if not result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("%s: still %s after %.0f s"
                                 % (what, result, DEADLINE))
        time.sleep(0.2)


def pick_users(cluster):
    """Fills USERS from the ring: 6 users with a replica on VICTIM and 2
    without (the ones ack = all must leave undisturbed)."""
    candidates = ["part%02d" % i for i in range(60)]
    placement = cluster.ring_replicas(candidates)
    on = [u for u in candidates if VICTIM in placement[u]][:6]
    off = [u for u in candidates if VICTIM not in placement[u]][:2]
    if len(on) < 6 or len(off) < 2:
        raise AssertionError("ring: too few users on/off %s: %s"
                             % (VICTIM, placement))
    USERS[:] = sorted(on + off)
    return {u: placement[u] for u in USERS}


def check_files(cluster, what):
    files = cluster.user_files()
    for node in cluster.node_names:
        report = backupcheck.check_backup_files(files[node], list_all=False)
        expect(report.accepted, "Cyrus's ctl_backups verify accepts every "
               "file on %s %s (%d users)" % (node, what, len(files[node])),
               "\n".join("%s: %s" % (u, c.verify_status)
                         for u, c in report.users.items()))


def heal(cluster, link):
    offset = len(cluster.router_log())
    link.restore()
    cluster.wait_node_up(VICTIM, offset)


def quorum_phase(cluster, source, link, placement, sent):
    rolling = source.start_rolling_sync("cairn")
    link.cut()
    print("# %s cut off; users with a replica there: %s" % (
        VICTIM, sorted(u for u in USERS if VICTIM in placement[u])))
    for round_ in range(3):
        for user in USERS:
            source.deliver(user, labmail.make_message(user, 100 + round_,
                                                      1500))
            sent[user].add(message_id(user, 100 + round_))
    wait_until("rolling sync_client replicates to the reachable replicas",
               lambda: missing_on(cluster, sent, placement, skip=[VICTIM]))
    expect(rolling.running, "writes go on under ack quorum: every new "
           "message on every reachable replica, rolling sync_client "
           "still running")
    rolling.stop()
    lagging = missing_on(cluster, sent, placement)
    expect(lagging and all(node == VICTIM for _, node, _ in lagging),
           "only %s lags: %s" % (VICTIM, lagging))
    heal(cluster, link)
    r = cluster.cairnctl("verify")
    expect(r.returncode != 0, "cairnctl verify sees %s's users disagree "
           "(exit %d)" % (VICTIM, r.returncode), r.stdout + r.stderr)
    begin = time.monotonic()
    r = cluster.cairnctl("repair", "-d", "main", timeout=300)
    expect(r.returncode == 0, "cairnctl repair -d main (%.1f s): %s"
           % (time.monotonic() - begin,
              r.stdout.strip().replace("\n", "; ")), r.stdout + r.stderr)
    r = cluster.cairnctl("verify")
    expect(r.returncode == 0, "cairnctl verify agrees after the repair",
           r.stdout + r.stderr)
    gaps = missing_on(cluster, sent, placement)
    expect(not gaps, "every source message on every replica (bodies checked against their GUIDs)",
           str(gaps))


def all_phase(cluster, source, link, placement, sent):
    cluster.rewrite_config({"ack": "all"})
    cluster.daemons["router"].stop()
    cluster.start_router()
    link.cut()
    affected = sorted(u for u in USERS if VICTIM in placement[u])
    failed, ok = [], []
    for user in USERS:
        source.deliver(user, labmail.make_message(user, 200, 1500))
        sent[user].add(message_id(user, 200))
        r = source.sync_client([user], channel="cairn", timeout=120)
        (ok if r.ok else failed).append(user)
    expect(failed == affected, "ack all: exactly %s's users fail (%s), "
           "the others replicate (%s)" % (VICTIM, failed, ok))
    locked = [line for line in source.log().splitlines()
              if "IMAP_MAILBOX_LOCKED" in line]
    expect(locked, "their NO is retryable: %s"
           % (locked[-1].strip() if locked else None))
    heal(cluster, link)
    for user in failed:
        r = source.sync_client([user], channel="cairn")
        expect(r.ok, "healed: sync_client -u %s exits 0" % user, r)
    r = cluster.cairnctl("verify")
    expect(r.returncode == 0, "cairnctl verify agrees", r.stdout + r.stderr)
    gaps = missing_on(cluster, sent, placement)
    expect(not gaps, "every source message on every replica (bodies checked against their GUIDs)",
           str(gaps))


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    try:
        link = labnet.Link()
    except labnet.LinkUnavailable as e:
        print("SKIP: network namespaces unavailable here (%s)" % e)
        return 77
    try:
        with cairncluster.Cluster(
                binaries, nodes=4, replicas=3,
                destination_settings={"ack": "quorum"},
                router_settings={"node_timeout": "20s",
                                 "node_answer_timeout": "2s"},
                # the other nodes on the host's end of node2's link: a
                # pull by node2 (repair) reaches them, 127.0.0.1 would
                # be its own namespace's loopback
                node_hosts={"node1": link.outside, VICTIM: link.inside,
                            "node3": link.outside, "node4": link.outside},
                node_wrappers={VICTIM: link.wrapper()}) as cluster, \
                cyruslab.Lab() as lab:
            cluster.start()
            source = lab.add_source(channels={"cairn":
                                              cluster.csync_address})
            lab.start()
            placement = pick_users(cluster)
            labmail.populate(source, USERS, messages=3, extras=False,
                             sieve=False)
            sent = {u: {message_id(u, i) for i in range(1, 4)}
                    for u in USERS}
            r = source.sync_client(USERS, channel="cairn")
            expect(r.ok, "first sync_client -u of %d users" % len(USERS), r)
            quorum_phase(cluster, source, link, placement, sent)
            all_phase(cluster, source, link, placement, sent)
            check_files(cluster, "at the end")
            statuses = cluster.stop()
            expect(all(s == 0 for s in statuses.values()),
                   "router and nodes exit 0 on SIGTERM %s" % statuses)
    finally:
        link.close()
    print("test_partition: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
