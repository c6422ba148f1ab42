#!/usr/bin/env python3
"""Kill matrix with a real sync_client (issue 11, item 5): SIGKILL a node
or the router at chosen points of `sync_client -A` and rolling passes
(`sync_client -R -1`), replicas = 2, ack all; restart it and rerun until
sync_client exits 0.

A kill point is an observable event, never a time: "after the router has
logged its Nth APPLY of the pass" (the router logs each command as it
starts forwarding it; log_level debug), N drawn from a seeded generator
(the seed is printed; CAIRN_TEST_SEED or --seed repeats a matrix) within
the APPLYs a calibration pass of the same shape logged.  The victim node
is drawn too.

Each run: new mail (and flag changes) for every user, a pass, the kill at
its point, the victim restarted, the same pass rerun until it exits 0
(at most 10 times), `cairnctl repair -d main`, `cairnctl verify`.
Measured per run:
  acked lost   messages committed in a replica's index when the kill
               happened (what a node ACKs is committed first) and missing
               from it after convergence (must be 0);
  applied twice  bodies stored twice in one user's data file;
  verify       cairnctl verify after the repair (must agree), and at the
               end Cyrus's ctl_backups verify of every file;
  converge     seconds from the kill to verify agreeing.
Asserted at the end: every source message on every replica, 0 acked
lost, verify ok everywhere; the table is printed.

usage: test_kill_matrix.py [--node-points N] [--router-points N]
                           [--seed S] [--router P] [--node P] [--cairnctl P]
CI: 6 node points + 3 router points; soak (label soak): 100 + 30.
"""
import gzip
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402

STARTED = time.monotonic()
USERS = ["kim%02d" % i for i in range(6)]
APPLY = re.compile(r"debug: \[[^]]*\] APPLY ")
DEADLINE = 120.0  # hang guard only
MAX_RERUNS = 10


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def take_option(name, default):
    if name in sys.argv:
        at = sys.argv.index(name)
        value = sys.argv[at + 1]
        del sys.argv[at:at + 2]
        return int(value)
    return default


def committed(cluster):
    """{(node, user): set of GUIDs in the index}: what each replica has
    committed (and so may have acknowledged)."""
    found = {}
    for node, users in cluster.user_files().items():
        for user, path in users.items():
            try:
                db = sqlite3.connect("file:%s?mode=ro" % (path + ".index"),
                                     uri=True, timeout=10)
                try:
                    found[(node, user)] = {row[0] for row in db.execute(
                        "SELECT guid FROM message")}
                finally:
                    db.close()
            except sqlite3.Error:
                found[(node, user)] = set()
    return found


def bodies_twice(cluster):
    """Bodies stored more than once in one user's data file."""
    twice = 0
    for node, users in cluster.user_files().items():
        for user, path in users.items():
            try:
                with gzip.open(path, "rb") as f:
                    data = f.read()
            except (OSError, EOFError, zlib.error):
                continue
            seen = {}
            for m in cairncluster.FILE_LITERAL.finditer(data):
                seen[m.group(2)] = seen.get(m.group(2), 0) + 1
            twice += sum(n - 1 for n in seen.values() if n > 1)
    return twice


def router_applies(cluster):
    return len(APPLY.findall(cluster.router_log()))


class Matrix:
    def __init__(self, cluster, source, rng):
        self.cluster, self.source, self.rng = cluster, source, rng
        self.next_index = 10
        self.rows = []

    def new_mail(self):
        for user in USERS:
            count = self.rng.randint(1, 3)
            messages = [labmail.make_message(user, self.next_index + i, 900)
                        for i in range(count)]
            self.next_index += count
            self.source.deliver(user, *messages)
        user = self.rng.choice(USERS)
        with self.source.imap(user) as conn:
            labmail.check_ok(*conn.select("INBOX"), "SELECT")
            labmail.check_ok(*conn.uid("STORE", "1:*", "+FLAGS.SILENT",
                                       r"(\Flagged)"), "STORE")

    def run_pass(self, mode):
        if mode == "all":
            return self.source.sync_client(channel="cairn", all_users=True)
        return self.source.sync_client(channel="cairn", rolling_once=True)

    def calibrate(self, mode):
        """APPLYs the router logs for one pass of this shape."""
        self.new_mail()
        before = router_applies(self.cluster)
        r = self.run_pass(mode)
        expect(r.ok, "calibration pass (%s)" % mode, r)
        return max(1, router_applies(self.cluster) - before)

    def one(self, victim, mode, point):
        cluster = self.cluster
        self.new_mail()
        twice_before = bodies_twice(cluster)
        base = router_applies(cluster)
        proc = self.start_pass(mode)
        deadline = time.monotonic() + DEADLINE
        killed = False
        while time.monotonic() < deadline:
            if router_applies(cluster) - base >= point:
                cluster.daemons[victim].signal(signal.SIGKILL)
                killed = True
                break
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        kill_time = time.monotonic()
        acked = committed(cluster) if killed else {}
        # restarted at once: sync_client may be retrying its connection
        # to a killed router meanwhile (it does not give up by itself)
        if victim == "router":
            cluster.daemons["router"].stop()
            cluster.start_router()
        else:
            offset = len(cluster.router_log())
            cluster.daemons[victim].stop()
            cluster.start_node(victim)
            if killed:
                cluster.wait_node_up(victim, offset)
        proc.wait(timeout=DEADLINE)
        reruns = 0
        while True:
            r = self.run_pass(mode)
            reruns += 1
            if r.ok or reruns >= MAX_RERUNS:
                break
        expect(r.ok, "%s killed at APPLY %d of a %s pass: sync_client "
               "exits 0 after %d rerun(s)" % (victim, point, mode, reruns),
               r)
        repair = cluster.cairnctl("repair", "-d", "main", timeout=300)
        verify = cluster.cairnctl("verify")
        converge = time.monotonic() - kill_time
        final = committed(cluster)
        lost = sum(len(guids - final.get(key, set()))
                   for key, guids in acked.items())
        self.rows.append({
            "fault": "%s@%s" % ("node" if victim != "router" else "router",
                                mode),
            "killed": killed, "lost": lost,
            "twice": bodies_twice(cluster) - twice_before,
            "verify": repair.returncode == 0 and verify.returncode == 0,
            "converge": converge, "detail": verify.stdout[-400:]
            + repair.stdout[-400:] + repair.stderr[-400:]})

    def start_pass(self, mode):
        """The pass in the background, logging as run_tool's do."""
        source = self.source
        argv = [os.path.join(cyruslab.CYRUS_BIN, "sync_client"), "-C",
                source.config_path, "-v", "-n", "cairn"]
        argv += ["-A"] if mode == "all" else ["-R", "-1"]
        wrapped = cyruslab.with_private_devlog(
            argv, source.syslog_socket, os.path.join(source.dir, "dev"))
        return subprocess.Popen(wrapped, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)


def print_table(rows):
    print("\n%-14s %5s %7s %10s %13s %7s %14s" % (
        "fault", "runs", "killed", "acked lost", "applied twice",
        "verify", "converge s"))
    for fault in sorted({r["fault"] for r in rows}):
        mine = [r for r in rows if r["fault"] == fault]
        times = [r["converge"] for r in mine]
        print("%-14s %5d %7d %10d %13d %7s %6.1f / %5.1f" % (
            fault, len(mine), sum(r["killed"] for r in mine),
            sum(r["lost"] for r in mine), sum(r["twice"] for r in mine),
            "ok" if all(r["verify"] for r in mine) else "FAIL",
            sum(times) / len(times), max(times)))
    print("(applied twice: bodies a run left stored twice in one data "
          "file; converge: mean / max seconds from the kill to verify "
          "agreeing after repair)\n")


def main():
    node_points = take_option("--node-points", 6)
    router_points = take_option("--router-points", 3)
    seed = take_option("--seed", int(os.environ.get("CAIRN_TEST_SEED",
                                                    time.time_ns() % 100000)))
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    print("# seed %d (repeat with --seed %d): %d node points, %d router "
          "points" % (seed, seed, node_points, router_points))
    rng = random.Random(seed)
    with cairncluster.Cluster(binaries, nodes=3, replicas=2,
                              destination_settings={"ack": "all"},
                              router_settings={"node_timeout": "20s",
                                               "node_answer_timeout": "2s"}
                              ) as cluster, cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        labmail.populate(source, USERS, messages=3, sieve=False)
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "first sync_client -u of %d users" % len(USERS), r)
        matrix = Matrix(cluster, source, rng)
        # two passes of each shape, the larger count kept (the first
        # rolling pass also carries what the population left in the sync
        # log); a point past a pass's APPLYs kills nothing ("killed" < runs)
        span = {}
        for mode in ("all", "rolling", "all", "rolling"):
            span[mode] = max(span.get(mode, 0), matrix.calibrate(mode))
        print("# APPLYs per pass: %s" % span)
        plan = [(rng.choice(cluster.node_names), rng.choice(list(span)))
                for _ in range(node_points)]
        plan += [("router", rng.choice(list(span)))
                 for _ in range(router_points)]
        for victim, mode in plan:
            point = rng.randint(1, span[mode])
            print("# kill %s at APPLY %d of a %s pass" % (victim, point,
                                                           mode))
            matrix.one(victim, mode, point)
        print_table(matrix.rows)
        bad = [r for r in matrix.rows if not r["verify"]]
        expect(not bad, "cairnctl repair + verify agree after every run",
               "\n".join(r["detail"] for r in bad))
        lost = sum(r["lost"] for r in matrix.rows)
        expect(lost == 0, "acknowledged updates lost: %d" % lost)
        final = committed(cluster)
        placement = cluster.ring_replicas(USERS)
        for user in USERS:
            guids = [final.get((n, user), set()) for n in placement[user]]
            expect(guids[0] == guids[1] and guids[0],
                   "%s: both replicas hold the same %d messages"
                   % (user, len(guids[0])))
        for user in USERS:
            wanted = {m["guid"] for box in source.snapshot(users=[user])
                      .values() for m in box["messages"]}
            for node in placement[user]:
                missing = wanted - final.get((node, user), set())
                expect(wanted and not missing, "%s on %s: all %d source "
                       "messages (by GUID)" % (user, node, len(wanted)),
                       str(sorted(missing)))
        files = cluster.user_files()
        for node in cluster.node_names:
            report = backupcheck.check_backup_files(files[node],
                                                    list_all=False)
            expect(report.accepted, "Cyrus's ctl_backups verify accepts "
                   "every file on %s (%d users)" % (node, len(files[node])),
                   "\n".join("%s: %s" % (u, c.verify_status)
                             for u, c in report.users.items()))
    print("test_kill_matrix: passed in %.1fs (seed %d)"
          % (time.monotonic() - STARTED, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
