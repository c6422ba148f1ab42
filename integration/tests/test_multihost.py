#!/usr/bin/env python3
"""A multi-host test bed (issue 11, item 1): the router and each of 4
nodes on a host of its own, a network namespace on a private bridge
(labnet.Bridge, 198.18.N.0/24); nothing of cairn listens on 127.0.0.1.

The Cyrus SOURCE (on this host) replicates to the router's address; the
router and cairnctl reach the nodes at theirs; node-to-node pulls go over
the bridge too.  The destination holds node1-3 (2 replicas); node4 runs
empty until it joins.
  1. full backup: `sync_client -A` of 6 users; `cairnctl verify` agrees;
     every listener in every namespace is on its bed address (ss -ltn);
  2. restore from the cluster: `cairnctl restore --user U` of two users
     into a real Cyrus replica; mailboxes, UIDs, flags and message bytes
     equal the source's;
  3. rebalance across it: `cairnctl ring add-node node4`, `cairnctl
     rebalance -g 0`; every user on exactly its new replicas, verify
     agrees, new mail replicates (`sync_client -A` exits 0) and verify
     agrees again.
Exit 77 when namespaces cannot be made here.

usage: test_multihost.py [--router P] [--node P] [--cairnctl P]
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402
import labnet  # noqa: E402
from test_restore_cairn import contents  # noqa: E402

STARTED = time.monotonic()
USERS = ["host%02d" % i for i in range(6)]
HOSTS = ["router", "node1", "node2", "node3", "node4"]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def listeners(bed, host):
    r = subprocess.run(bed.wrapper(host) + ["ss", "-Hltn"],
                       capture_output=True, text=True, timeout=30)
    return [line.split()[3] for line in r.stdout.splitlines()
            if len(line.split()) > 3]


def restore_user(cluster, lab, replica, user):
    password_file = os.path.join(lab.dir, "restore.pw")
    with open(password_file, "w") as f:
        f.write(cyruslab.REPLICATION_PASSWORD + "\n")
    os.chmod(password_file, 0o600)
    r = cluster.cairnctl(
        "restore", "--json", "--user", user, "--server",
        "127.0.0.1:%d" % replica.ports["csync"], "--authname",
        cyruslab.REPLICATION_USER, "--password-file", password_file,
        "--timeout", "20", timeout=120)
    summary = json.loads(r.stdout or "{}")
    expect(r.returncode == 0 and summary.get("ok"),
           "cairnctl restore --user %s from the bed's nodes" % user,
           r.stdout + r.stderr)


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    try:
        bed = labnet.Bridge(HOSTS)
    except labnet.LinkUnavailable as e:
        print("SKIP: network namespaces unavailable here (%s)" % e)
        return 77
    try:
        print("# bed %s: %s" % (bed.bridge, ", ".join(
            "%s %s" % (h, bed.address[h]) for h in HOSTS)))
        nodes = HOSTS[1:]
        with cairncluster.Cluster(
                binaries, nodes=4, replicas=2,
                node_hosts={n: bed.address[n] for n in nodes},
                node_wrappers={n: bed.wrapper(n) for n in nodes},
                router_host=bed.address["router"],
                router_wrapper=bed.wrapper("router")) as cluster, \
                cyruslab.Lab() as lab:
            r = cluster.cairnctl("ring", "create", cluster.ring_file, "-d",
                                 "main", "-r", "2", "-n", "node1:100", "-n",
                                 "node2:100", "-n", "node3:100")
            expect(r.returncode == 0, "3-node ring, 2 replicas",
                   r.stdout + r.stderr)
            cluster.start()
            replica = lab.add_replica()
            source = lab.add_source(channels={"cairn":
                                              cluster.csync_address})
            lab.start()
            for host in HOSTS:
                bound = listeners(bed, host)
                expect(bound and all(a.startswith(bed.address[host] + ":")
                                     for a in bound),
                       "%s listens only on %s: %s" % (
                           host, bed.address[host], bound))
            labmail.populate(source, USERS, messages=4, sieve=True)
            begin = time.monotonic()
            r = source.sync_client(channel="cairn", all_users=True)
            expect(r.ok, "full backup: sync_client -A of %d users into %s "
                   "(%.1f s)" % (len(USERS), cluster.csync_address,
                                 time.monotonic() - begin), r)
            r = cluster.cairnctl("verify")
            expect(r.returncode == 0, "cairnctl verify agrees",
                   r.stdout + r.stderr)

            restored = USERS[:2]
            for user in restored:
                restore_user(cluster, lab, replica, user)
            want = source.snapshot(users=restored)
            got = replica.snapshot(users=restored)
            expect(sorted(want) == sorted(got) and all(
                want[m]["messages"] == got[m]["messages"] for m in want),
                "restored mailboxes equal the source's: UIDs, flags, GUIDs "
                "(%d mailboxes)" % len(want),
                json.dumps([want, got], indent=1)[:4000])
            for user in restored:
                # the user's own folders (the source also lists folders
                # other users share with it, not restored here)
                src, dst = [{name: messages for name, messages in
                             contents(server, user).items()
                             if name.startswith("INBOX")}
                            for server in (source, replica)]
                expect(src and src == dst, "%s: message bytes equal by "
                       "SHA-1 (%d folders)" % (user, len(src)),
                       "%s\n%s" % (sorted(src), sorted(dst)))

            new_ring = os.path.join(cluster.dir, "new.ring")
            r = cluster.cairnctl("ring", "add-node", cluster.ring_file,
                                 "node4:100", "-o", new_ring)
            expect(r.returncode == 0, "ring add-node node4",
                   r.stdout + r.stderr)
            begin = time.monotonic()
            r = cluster.cairnctl("rebalance", "-d", "main", "-g", "0",
                                 new_ring, timeout=300)
            expect(r.returncode == 0, "cairnctl rebalance across the bed "
                   "(%.1f s)" % (time.monotonic() - begin),
                   r.stdout + r.stderr)
            placement = cluster.ring_replicas(USERS)
            holders = cluster.holders()
            expect(all(holders.get(u) == sorted(placement[u])
                       for u in USERS),
                   "every user on exactly its new replicas (%d on node4)"
                   % sum("node4" in placement[u] for u in USERS),
                   "%s\n%s" % (placement, holders))
            r = cluster.cairnctl("verify")
            expect(r.returncode == 0, "cairnctl verify agrees after the "
                   "rebalance", r.stdout + r.stderr)
            for user in USERS:
                source.deliver(user, labmail.make_message(user, 50))
            r = source.sync_client(channel="cairn", all_users=True)
            expect(r.ok, "new mail replicates on the new ring", r)
            r = cluster.cairnctl("verify")
            expect(r.returncode == 0, "cairnctl verify agrees",
                   r.stdout + r.stderr)
            statuses = cluster.stop()
            expect(all(s == 0 for s in statuses.values()),
                   "router and nodes exit 0 on SIGTERM %s" % statuses)
    finally:
        bed.close()
    print("test_multihost: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
