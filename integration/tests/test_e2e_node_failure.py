#!/usr/bin/env python3
"""A storage node fails during a real sync_client run: never a false OK,
and everything is complete once the node is back and sync_client reruns.

A cyruslab SOURCE replicates six users (`sync_client -u`, one connection)
into a cairncluster of 3 nodes, 2 replicas, node_timeout 2s.
 1. SIGKILL: the victim node is killed (by pid) when the router logs the
    first request of the first user placed on it (GET USER); then, with
    new mail, another node at that user's first APPLY MESSAGE.  Every user with a
    replica there is reported failed by sync_client ("Error from
    sync_do_user(USER)"), the others succeed and their replicas equal the
    source.  The node is restarted and sync_client rerun: exit 0, every
    user on exactly its ring replicas, every replica equal to the source,
    cairnctl verify -r ok, Cyrus's ctl_backups verify accepts every file.
 2. SIGSTOP: new mail and a flag change for everyone, another node hangs
    (SIGSTOP) for the whole run: its users fail (after the router's node
    timeout), nothing is acknowledged falsely; then it is killed (what it
    had queued is lost), restarted, sync_client reruns: the same checks.

Scenario "lagging-replica" (instead of 1): odd users get only a flag
change in 2, one APPLY MAILBOX that the live replica stores while the
hung one never does; after the restart a rerun must still bring the
lagging replica up to date (sync_client asks only what GETs report).
Between the missed writes and that rerun the router is restarted too
(SIGTERM by pid, started again on the same config): its repair marks
must survive in [router] state_dir (repair-marks.main names each lagging
user and node), or the rerun's GETs would be answered by the up-to-date
replica and the lagging one would stay behind.

usage: test_e2e_node_failure.py [--router P] [--node P] [--cairnctl P]
                                [crash | lagging-replica]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = ["anna", "ben", "cleo", "dirk", "emma", "finn"]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def failed_users(result):
    return set(re.findall(r"Error from sync_do_user\((\S+)\)", result.stderr))


def replicas_equal_source(lab, source, cluster, users, what):
    """Each replica (by the ring) of each user equals the source."""
    placement = cluster.ring_replicas(users)
    files = cluster.user_files()
    for user in users:
        want = cairncluster.comparable_snapshot(source.snapshot(users=[user]))
        for node in placement[user]:
            path = files[node].get(user)
            expect(path is not None, "%s: %s is on %s" % (what, user, node),
                   repr(files[node]))
            got = cairncluster.snapshot_from_index(
                cairncluster.index_state(path))
            expect(got == want, "%s: %s on %s equals the source (%d "
                   "mailboxes)" % (what, user, node, len(want)),
                   "\n".join(cairncluster.index_differences(want, got)[:30]))


def full_check(lab, source, cluster, what, cyrus_tools=True):
    placement = cluster.ring_replicas(USERS)
    expect(cluster.holders() == {u: sorted(n) for u, n in placement.items()},
           "%s: every user on exactly its ring replicas" % what,
           repr(cluster.holders()))
    r = cluster.cairnctl("verify", "-q", "-f", "-r", cluster.ring_file,
                         *USERS)
    print("# %s: cairnctl verify exit %d:\n%s" % (
        what, r.returncode, r.stdout.strip()))
    replicas_equal_source(lab, source, cluster, USERS, what)
    expect(r.returncode == 0, "%s: cairnctl verify --full -r ring ok" % what,
           r.stdout + r.stderr)
    for node, files in cluster.user_files().items():
        if not cyrus_tools:
            break
        report = backupcheck.check_backup_files(files)
        expect(report.accepted, "%s: Cyrus's ctl_backups verify accepts %s's "
               "files of %s" % (what, node, sorted(files)),
               "\n".join("%s: %s" % (u, c.verify_status)
                         for u, c in report.users.items()))


def sync_in_background(source):
    """Start sync_client -u USERS in a thread; returns (thread, box)."""
    box = {}

    def run():
        box["result"] = source.sync_client(users=USERS, channel="cairn",
                                           timeout=90)
    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def wait_for_log(cluster, offset, pattern, thread, timeout=60):
    """Wait until the router's log (after offset) matches; True if it did
    before the sync_client thread ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        if re.search(pattern, cluster.router_log()[offset:]):
            return True
        time.sleep(0.005)
    return False


def check_outcome(lab, source, cluster, result, victim, what):
    placement = cluster.ring_replicas(USERS)
    affected = {u for u in USERS if victim in placement[u]}
    failed = failed_users(result)
    print("# %s: sync_client exit %d after %.2fs; failed %s; users on %s: %s"
          % (what, result.returncode, result.seconds, sorted(failed),
             victim, sorted(affected)))
    expect(result.returncode != 0, "%s: sync_client did not exit 0" % what,
           result)
    expect(failed == affected, "%s: exactly the users with a replica on %s "
           "failed (NO, never a false OK)" % (what, victim),
           "failed %s\naffected %s\n%s" % (sorted(failed), sorted(affected),
                                           result))
    ok_users = [u for u in USERS if u not in failed]
    replicas_equal_source(lab, source, cluster, ok_users,
                          "%s, before repair" % what)


def crash_during_run(lab, source, cluster, placement, victim, request):
    """SIGKILL victim when the router logs `request` (e.g. "GET USER") for
    the first user placed on it."""
    first = next(u for u in USERS if victim in placement[u])
    offset = len(cluster.router_log())
    thread, box = sync_in_background(source)
    landed = wait_for_log(cluster, offset, r"%s.* user=%s\b"
                          % (request, re.escape(first)), thread)
    status = cluster.stop_node(victim, "kill")
    thread.join()
    what = "SIGKILL %s at %s's %s" % (victim, first, request)
    expect(landed, "%s (exit %s) landed during the run" % (what, status),
           str(box.get("result")))
    check_outcome(lab, source, cluster, box["result"], victim, what)
    offset = len(cluster.router_log())
    cluster.start_node(victim)
    cluster.wait_node_up(victim, offset)
    r = source.sync_client(users=USERS, channel="cairn")
    expect(r.ok, "after restarting %s: sync_client -u exits 0 (%.2fs)"
           % (victim, r.seconds), r)
    # The rerun gave the restarted replica what it missed, stamped now:
    # its expunge and delete times are later than its peer's (the router
    # stamps each write once, but this write came twice). cairnctl repair
    # copies the good replica so that both hold the same facts.
    r = cluster.cairnctl("verify", "-q", "-r", cluster.ring_file, *USERS)
    print("# after %s + rerun, before repair: verify exit %d\n%s"
          % (what, r.returncode, r.stdout.strip()))
    r = cluster.cairnctl("repair", "-d", "main", *USERS, timeout=120)
    expect(r.returncode == 0, "after %s + rerun: cairnctl repair exits 0"
           % what, r.stdout + r.stderr)
    full_check(lab, source, cluster, "after %s + restart + repair" % what,
               cyrus_tools=False)


def marks_path(cluster):
    """The router's repair marks of destination main (the default
    state_dir, cairn-data/router, is relative to the config file)."""
    return os.path.join(cluster.dir, "cairn-data", "router",
                        "repair-marks.main")


def restart_router_keeps_marks(cluster, placement, victim):
    """SIGTERM the router by pid, check its marks file names every user
    with a replica on victim, start it again on the same config, check it
    read them back."""
    lagging = sorted(u for u in USERS if victim in placement[u])
    status = cluster.daemons["router"].stop()
    expect(status == 0, "router exits 0 on SIGTERM with marks to keep (%s)"
           % status)
    path = marks_path(cluster)
    expect(os.path.exists(path), "the router's marks file %s exists" % path)
    with open(path) as f:
        lines = set(f.read().splitlines())
    for user in lagging:
        expect("%s %s behind" % (user, victim) in lines,
               "marks file: %s on %s is behind" % (user, victim),
               "\n".join(sorted(lines)))
    offset = len(cluster.router_log())
    cluster.start_router()
    wanted = "%d users marked for repair from the last run" % len(lagging)
    expect(wanted in cluster.router_log()[offset:],
           "the restarted router reports: %s" % wanted,
           cluster.router_log()[offset:][-3000:])


def main():
    cyruslab.skip_unless_runnable()
    binaries, rest = cairncluster.binaries_from_argv()
    scenario = rest[0] if rest else "crash"
    if scenario not in ("crash", "lagging-replica"):
        print(__doc__)
        return 64
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, router_settings={
            "node_timeout": "2s"}) as cluster, cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        cyruslab.populate(source, USERS, messages=5)
        placement = cluster.ring_replicas(USERS)

        if scenario == "crash":
            crash_during_run(lab, source, cluster, placement, "node2",
                             "GET USER")
            # again in the middle of a user's uploads
            for user in USERS:
                source.deliver(user, cyruslab.make_message(user, 30, 50000))
            crash_during_run(lab, source, cluster, placement, "node1",
                             "APPLY MESSAGE")
        else:
            r = source.sync_client(users=USERS, channel="cairn")
            expect(r.ok, "first sync_client -u exits 0", r)
            full_check(lab, source, cluster, "first sync", cyrus_tools=False)

        # 2. another node hangs (SIGSTOP) for a whole run of new mail and
        # flag changes, then crashes (SIGKILL): what it had queued is lost
        victim = "node3"
        for n, user in enumerate(USERS):
            # lagging-replica: odd users get a flag change alone, i.e. one
            # APPLY MAILBOX that the live replica stores and the hung one
            # never acknowledges
            if n % 2 == 0 or scenario == "crash":
                source.deliver(user, cyruslab.make_message(user, 40))
            with source.imap(user) as conn:
                cyruslab.check_ok(*conn.select("INBOX"), "SELECT")
                cyruslab.check_ok(*conn.uid("STORE", "1", "+FLAGS.SILENT",
                                            r"(\Flagged $Hung)"), "STORE")
        cluster.stop_node(victim, "pause")
        try:
            r = source.sync_client(users=USERS, channel="cairn", timeout=90)
        finally:
            status = cluster.stop_node(victim, "kill")
        check_outcome(lab, source, cluster, r, victim, "SIGSTOP %s" % victim)
        if scenario == "lagging-replica":
            restart_router_keeps_marks(cluster, placement, victim)
        offset = len(cluster.router_log())
        cluster.start_node(victim)
        cluster.wait_node_up(victim, offset)
        r = source.sync_client(users=USERS, channel="cairn")
        expect(r.ok, "after SIGSTOP + SIGKILL (exit %s) + restart of %s: "
               "sync_client -u exits 0 (%.2fs)" % (status, victim, r.seconds),
               r)
        full_check(lab, source, cluster, "after SIGSTOP + SIGKILL + restart")
        statuses = cluster.stop()
        expect(all(s == 0 for s in statuses.values()),
               "router and nodes exit 0 on SIGTERM %s" % statuses)
    print("test_e2e_node_failure: passed in %.1fs" % (time.monotonic() -
                                                      STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
