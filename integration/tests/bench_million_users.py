#!/usr/bin/env python3
"""A million users: how fast `cairnctl status`, `age` and `user list`
answer, and how much memory cairnctl takes (issue 15 part 4).

Builds a 3-node cluster (replicas 2) whose nodes already hold N users
(CAIRN_BENCH_USERS, default 100,000 so that the bench stays within a
few minutes here - writing 10^6 users' catalog rows and 4 x 10^6 file
links alone took 349 s on this 2-core machine; --users N) before they start: each
node's catalog gets a users row and a cairn_user_figures row per user,
and each user's data file and index are hard links to one empty pair of
files per node (the figures cache is checked against the files' size,
mtime and inode, so the links keep every row valid).  These are catalog
entries, not backups: status, age and user list read only the catalog
and stat two files per user, which is what is measured here.  Then it
runs, each under /usr/bin/time -v, `cairnctl status`, `cairnctl age
--warn 1d` and `cairnctl user list` (output to a pipe read to its last
line, as `| tail -1` would) and prints wall time and peak RSS of each.
Figures only: nothing is asserted about time; the test fails if a
command fails or the counts are wrong.

usage: bench_million_users.py [--router P] [--node P] [--cairnctl P]
                              [--users N]
"""
import os
import re
import sqlite3
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402

REPLICAS = 2
NODES = 3


def users_count(argv):
    if "--users" in argv:
        return int(argv[argv.index("--users") + 1])
    return int(os.environ.get("CAIRN_BENCH_USERS", "100000"))


def fill_node(data_dir, users, now):
    """Catalog rows and figures for users on the node in data_dir."""
    root = os.path.join(data_dir, "bench")
    os.makedirs(root, exist_ok=True)
    for d in range(256):
        os.makedirs(os.path.join(root, "%02x" % d), exist_ok=True)
    pairs = {}

    def pair(n):
        """An empty data file and index, shared by 60,000 users (a file
        system allows 65,000 links to one inode)."""
        k = n // 60000
        if k not in pairs:
            data = os.path.join(root, "empty%d" % k)
            open(data, "w").close()
            open(data + ".index", "w").close()
            pairs[k] = (data, os.stat(data), os.stat(data + ".index"))
        return pairs[k]

    db = sqlite3.connect(os.path.join(data_dir, "catalog.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS users(userid TEXT PRIMARY KEY"
               " NOT NULL, data_path TEXT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS cairn_user_figures("
               "userid TEXT PRIMARY KEY NOT NULL, bytes_on_disk INTEGER,"
               " raw_bytes INTEGER, chunks INTEGER, messages INTEGER,"
               " mailboxes INTEGER, last_backup_time INTEGER,"
               " data_size INTEGER, data_mtime_ns INTEGER, data_ino INTEGER,"
               " index_size INTEGER, index_mtime_ns INTEGER,"
               " index_ino INTEGER)")
    rows, figures = [], []
    for n, user in enumerate(users):
        path = os.path.join(root, "%02x" % (n % 256), user + "_bench")
        data, st, sti = pair(n)
        os.link(data, path)
        os.link(data + ".index", path + ".index")
        rows.append((user, path))
        # ages spread over a week so every bucket has users
        figures.append((user, 0, 0, 1, 1, 1, now - (n * 37) % (8 * 86400),
                        st.st_size, st.st_mtime_ns, st.st_ino,
                        sti.st_size, sti.st_mtime_ns, sti.st_ino))
    db.executemany("INSERT INTO users VALUES (?, ?)", rows)
    db.executemany("INSERT INTO cairn_user_figures VALUES"
                   " (?,?,?,?,?,?,?,?,?,?,?,?,?)", figures)
    db.commit()
    db.close()


def timed(cluster, args, last_line_only=False):
    """Runs cairnctl ARGS under /usr/bin/time -v: (exit, seconds, peak RSS
    KiB, last line of stdout or all of it)."""
    argv = ["/usr/bin/time", "-v", cluster.binaries.cairnctl, "-c",
            cluster.config_path] + args
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    last, lines = "", []
    for line in process.stdout:  # read as it comes, as `| tail -1` does
        last = line.rstrip("\n")
        if not last_line_only:
            lines.append(last)
    err = process.stderr.read()
    process.wait()
    seconds = time.monotonic() - started
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return (process.returncode, seconds, int(rss.group(1)) if rss else -1,
            last if last_line_only else "\n".join(lines), err)


def main():
    if not os.access("/usr/bin/time", os.X_OK):
        print("FAIL: /usr/bin/time is needed for peak RSS (Debian package "
              "time)")
        return 1
    users_total = users_count(sys.argv)
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    now = int(time.time())
    users = ["u%07d@bench.example" % i for i in range(users_total)]
    with cairncluster.Cluster(binaries, nodes=NODES,
                              replicas=REPLICAS) as cluster:
        started = time.monotonic()
        for k, name in enumerate(cluster.node_names):
            # replicas on nodes k and k+1 (mod 3): each user on 2 nodes
            mine = [u for i, u in enumerate(users)
                    if i % NODES == k or (i + 1) % NODES == k]
            fill_node(cluster.data_dir(name), mine, now)
        print("# %d users x %d replicas written into %d node catalogs in "
              "%.1fs" % (users_total, REPLICAS, NODES,
                         time.monotonic() - started))
        cluster.start()
        failures = []
        for args, last_only in ((["status", "-t", "300s"], False),
                                (["age", "--warn", "9d", "-t", "300s"], False),
                                (["user", "list", "-t", "300s"], True)):
            rc, seconds, rss, out, err = timed(cluster, args, last_only)
            print("# cairnctl %-16s %6.2f s  peak RSS %6.1f MiB  exit %d" % (
                " ".join(args), seconds, rss / 1024.0, rc))
            shown = out.splitlines()[-1] if last_only else out
            print("\n".join("#   " + line for line in shown.splitlines()[:8]))
            if rc != 0:
                failures.append("%s: exit %d: %s" % (args, rc, err[-2000:]))
            if args[0] == "status" and "%d user replicas" % (
                    users_total * REPLICAS) not in out:
                failures.append("status does not count %d user replicas"
                                % (users_total * REPLICAS))
            if args[0] == "age" and not out.startswith(
                    "AGE OK - %d users" % users_total):
                failures.append("age does not count %d users" % users_total)
            if args[0] == "user" and out != "%d users" % users_total:
                failures.append("user list ends %r, not %d users"
                                % (out, users_total))
        if failures:
            print("FAIL: " + "\n".join(failures))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
