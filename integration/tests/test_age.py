#!/usr/bin/env python3
"""`cairnctl age` with one stale user (issue 12 part 3).

A cluster of 3 nodes (replicas 2) and a cyruslab source.  Cyrus's own
sync_client backs up the stale user first, then - once the clock has
moved past that backup's second (the event waited for) - the other
users.  The last backup times are read back from `cairnctl status -u
--json`; `age --now T` then judges the ages as of one hour and one second
after the stale user's backup, so the stale user is just over an hour
old and every other user just under: the buckets, the Nagios exit codes
(0 OK, 1 WARNING, 2 CRITICAL), the summary line, --json and -v (exactly
the stale user) are checked on real backups.  Finally a node is stopped
and `age` says UNKNOWN (exit 3).

usage: test_age.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
STALE = "ageold"
FRESH = ["agenew%02d" % i for i in range(1, 5)]


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def last_backups(cluster):
    """{user: newest last_backup_time over its replicas}."""
    r = cluster.cairnctl("--json", "status", "-u")
    rows = json.loads(r.stdout)["user_rows"]
    newest = {}
    for row in rows:
        newest[row["user"]] = max(newest.get(row["user"], 0),
                                  row["last_backup_time"])
    return newest


def age(cluster, *args):
    r = cluster.cairnctl("age", *args)
    print("# cairnctl age %s -> exit %d\n%s" % (
        " ".join(args), r.returncode,
        "\n".join("#   " + line for line in r.stdout.splitlines())))
    return r


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=3, replicas=2) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        cyruslab.populate(source, [STALE] + FRESH, messages=2, size=800,
                          extras=False, sieve=False)
        r = source.sync_client(channel="cairn", users=[STALE])
        expect(r.ok, "sync_client -u %s" % STALE, r)
        stale_time = last_backups(cluster)[STALE]
        expect(stale_time > 0, "%s's last backup time is known" % STALE)
        # the event: the clock's second has moved past the stale backup
        while int(time.time()) <= stale_time + 1:
            time.sleep(0.1)
        r = source.sync_client(channel="cairn", users=FRESH)
        expect(r.ok, "sync_client -u of %d more users" % len(FRESH), r)
        times = last_backups(cluster)
        expect(sorted(times) == sorted([STALE] + FRESH),
               "status -u lists every user", times)
        expect(all(times[u] >= stale_time + 2 for u in FRESH),
               "the other users were backed up 2 s or more later", times)
        now = str(stale_time + 3601)  # stale: 1h00m01s, others < 1h

        r = age(cluster, "--now", now)
        expect(r.returncode == 0 and r.stdout.startswith(
            "AGE OK - 5 users, oldest 60m"), "no threshold: exit 0, OK", r)
        table = r.stdout.splitlines()
        expect(table[2].split()[:8] == ["main", "5", "4", "1", "0", "0",
                                        "0", "0"],
               "buckets: 4 users < 1h, 1 user < 6h", r.stdout)

        r = age(cluster, "--now", now, "--warn", "1h", "-v")
        expect(r.returncode == 1, "--warn 1h: exit 1 (WARNING)", r)
        expect(r.stdout.startswith(
            "AGE WARNING - 1 of 5 users not backed up for 60m, oldest 60m"),
            "the summary line comes first", r.stdout)
        listed = r.stdout.split("past the threshold:\n")[1].splitlines()[1:]
        expect([line.split()[1] for line in listed] == [STALE],
               "-v lists exactly the stale user", r.stdout)

        r = age(cluster, "--now", now, "--warn", "30s", "--crit", "1h")
        expect(r.returncode == 2 and r.stdout.startswith(
            "AGE CRITICAL - 1 of 5 users"), "--crit 1h: exit 2 (CRITICAL)", r)
        r = age(cluster, "--now", now, "--warn", "2h", "--crit", "1d")
        expect(r.returncode == 0, "--warn 2h: exit 0", r)

        r = cluster.cairnctl("--json", "age", "--now", now, "--warn", "1h",
                             "-v")
        doc = json.loads(r.stdout)
        print("# cairnctl --json age --now %s --warn 1h -v\n# %s" % (
            now, r.stdout.strip()))
        main_ages = doc["destinations"][0]
        expect(r.returncode == 1 and doc["status"] == "WARNING" and
               doc["exit"] == 1, "--json: status WARNING, exit 1", doc)
        expect(main_ages["buckets"] == {"lt_1h": 4, "lt_6h": 1, "lt_24h": 0,
                                        "lt_7d": 0, "older": 0, "never": 0}
               and main_ages["oldest_user"] == STALE and
               main_ages["oldest_seconds"] == 3601,
               "--json: buckets and the oldest user", doc)
        expect([u["user"] for u in doc["past_threshold"]] == [STALE],
               "--json -v: past_threshold is the stale user", doc)

        # the nodes cache each user's figures (catalog_figures.c): a new
        # backup of a user already listed must show, not the cached time
        source.deliver(STALE, cyruslab.make_message(STALE, 9, 800))
        r = source.sync_client(channel="cairn", users=[STALE])
        expect(r.ok, "sync_client -u %s again, with new mail" % STALE, r)
        again = last_backups(cluster)[STALE]
        expect(again > stale_time, "its new backup time is listed (%d > %d):"
               " the figures cache follows the files" % (again, stale_time))
        r = age(cluster, "--warn", "1d")
        expect(r.returncode == 0, "as of now, nobody is a day old: exit 0", r)
        cluster.stop_node("node3")
        r = age(cluster, "--warn", "1d", "-t", "2s")
        expect(r.returncode == 3 and r.stdout.startswith(
            "AGE UNKNOWN - node3: "), "a node down: exit 3 (UNKNOWN)", r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
