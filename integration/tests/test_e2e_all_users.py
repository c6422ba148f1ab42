#!/usr/bin/env python3
"""`sync_client -A` of many users into cairn: every body only in its own
user's log.

Ten users with a few messages each on a cyruslab SOURCE; three targets:
cluster A (3 nodes, 2 replicas) gets `sync_client -A`, cluster B (same
shape) gets `sync_client -u` of every user, and a Cyrus backupd gets
`-A` for contrast.  On A every data file holds exactly the bodies of its
own user's messages (parsed from the gzip members, SHA-1 = GUID) and A's
total size is within 10% of B's; backupd's -A total is printed (it copies
first-time users' bodies into every backup open on the connection).

usage: test_e2e_all_users.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = ["user%02d" % i for i in range(1, 11)]
MESSAGES = 4


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def source_guids(lab, source):
    """{user: set of GUIDs in the user's mailboxes}."""
    guids = {u: set() for u in USERS}
    for name, state in source.snapshot(users=USERS).items():
        guids[lab.mailbox_owner(name)].update(
            m["guid"] for m in state["messages"])
    return guids


def backupd_sizes(backup):
    """(data file bytes, data + index bytes, bodies stored) of backupd."""
    data = total = bodies = 0
    for path in backup.backup_files().values():
        data += os.path.getsize(path)
        total += os.path.getsize(path) + os.path.getsize(path + ".index")
        bodies += len(cairncluster.message_bodies(path))
    return data, total, bodies


def cluster_sizes(cluster):
    """(data file bytes, data + index bytes, bodies stored) of a cluster."""
    data = sum(cluster.data_file_bytes().values())
    total, _ = cluster.data_bytes()
    bodies = sum(len(cairncluster.message_bodies(path))
                 for files in cluster.user_files().values()
                 for path in files.values())
    return data, total, bodies


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries) as all_cluster, \
            cairncluster.Cluster(binaries) as user_cluster, \
            cyruslab.Lab() as lab:
        all_cluster.start()
        user_cluster.start()
        backup = lab.add_backup()
        source = lab.add_source(channels={
            "backup": backup.csync_address,
            "cairna": all_cluster.csync_address,
            "cairnu": user_cluster.csync_address})
        lab.start()
        # no extras: sharing would put another user's seen state in a log
        cyruslab.populate(source, USERS, messages=MESSAGES, size=2000,
                          extras=False, sieve=False)
        guids = source_guids(lab, source)

        r = source.sync_client(channel="cairna", all_users=True)
        expect(r.ok, "sync_client -A into cairn cluster A (%.2fs)"
               % r.seconds, r)
        r = source.sync_client(channel="cairnu", users=USERS)
        expect(r.ok, "sync_client -u (10 users) into cairn cluster B (%.2fs)"
               % r.seconds, r)
        r = source.sync_client(channel="backup", all_users=True)
        expect(r.ok, "sync_client -A into backupd (%.2fs)" % r.seconds, r)

        placement = all_cluster.ring_replicas(USERS)
        files = all_cluster.user_files()
        for user in USERS:
            for node in placement[user]:
                bodies = cairncluster.message_bodies(files[node][user])
                expect(set(bodies) == guids[user],
                       "-A: %s's log on %s holds exactly its own %d bodies"
                       % (user, node, len(guids[user])),
                       "log %s\nsource %s" % (sorted(bodies),
                                              sorted(guids[user])))
        expect(all_cluster.holders() == {
            u: sorted(n) for u, n in placement.items()},
            "-A: every user on exactly its 2 ring replicas")
        a_data, a_total, a_bodies = cluster_sizes(all_cluster)
        u_data, u_total, u_bodies = cluster_sizes(user_cluster)
        b_data, b_total, b_bodies = backupd_sizes(backup)
        distinct = sum(len(g) for g in guids.values())
        print("# %d users, %d distinct bodies of ~2000 bytes" % (
            len(USERS), distinct))
        print("# cairn -A (2 replicas): data files %d bytes, with indexes %d,"
              " %d bodies stored" % (a_data, a_total, a_bodies))
        print("# cairn -u (2 replicas): data files %d bytes, with indexes %d,"
              " %d bodies stored (-A/-u data: x%.3f)" % (
                  u_data, u_total, u_bodies, a_data / u_data))
        print("# backupd -A (1 copy): data files %d bytes, with indexes %d, "
              "%d bodies stored (x%.2f of cairn's per-replica data)" % (
                  b_data, b_total, b_bodies, b_data / (a_data / 2)))
        expect(a_bodies == u_bodies == 2 * distinct,
               "-A and -u both store each body once per replica (%d)"
               % a_bodies)
        expect(abs(a_data - u_data) <= u_data * 0.10 and
               abs(a_total - u_total) <= u_total * 0.10,
               "cairn -A within 10%% of -u (data %d vs %d, with indexes %d vs"
               " %d bytes)" % (a_data, u_data, a_total, u_total))
        statuses = all_cluster.stop()
        statuses.update(("B-" + k, v) for k, v in user_cluster.stop().items())
        expect(all(s == 0 for s in statuses.values()),
               "routers and nodes exit 0 on SIGTERM")
    print("test_e2e_all_users: passed in %.1fs" % (time.monotonic() -
                                                   STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
