#!/usr/bin/env python3
"""bench_cyrus.py - cairn side by side with Cyrus's backupd and Cyrus's
replica sync_server, fed by one real Cyrus source, in one table.

A deterministic mail set (mailgen.py: USERS x MESSAGES, log-normal sizes,
a few multi-MB messages, five folders, flags) is appended into a real
Cyrus source over IMAP. Then, for each target - Cyrus backupd, Cyrus
sync_server, cairn with 1 node, 3 nodes replicas 1, 3 nodes replicas 2 -
these phases run, each on its own source channel:

  full -u x1    one `sync_client -u USER` per user, one after another
  full -u x4    the same on 4 channels in parallel (a fresh target)
  full -A       one `sync_client -A` (a fresh target)
  unchanged     `-u` per user again on the first target (nothing new)
  incremental   one new message per user (LMTP), then `-u` of those users
                (a rolling `-R -1` pass here replicated nothing: issue 14)
  verify        `cairnctl verify --full` / `ctl_backups verify -A`
  compact       `cairnctl compact` / `ctl_backups compact -F -A`

For each it prints wall time, CPU of the client (sync_client or the tool,
from getrusage of children) and of the server processes (/proc/PID/stat,
children included: a Cyrus master's forked backupd or sync_server), the
servers' CPU per raw MB, messages/s, raw MB/s, bytes on disk, the peak RSS
of any server process (VmHWM, sampled), and how many times faster cairn
is than backupd and than sync_server. Nothing timed is asserted; outcomes
are: every sync_client and tool run succeeds, and every delivered message
is in cairn's and backupd's index after the full and incremental passes.

usage: bench_cyrus.py [--router P --node P --cairnctl P] [--users N]
         [--messages N] [--big-mb MB] [--seed S] [--targets a,b,...]
Each option is overridden by its environment variable when set:
CAIRN_BENCH_USERS (default 50), CAIRN_BENCH_MESSAGES (200),
CAIRN_BENCH_BIG_MB (6), CAIRN_BENCH_SEED (1), CAIRN_BENCH_TARGETS (all:
backupd,sync_server,cairn1,cairn3r1,cairn3r2). Exit 77 (ctest SKIP) when
not root or Cyrus is not installed.
"""
import argparse
import concurrent.futures
import hashlib
import imaplib
import os
import queue
import resource
import shutil
import sqlite3
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import mailgen  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SYNC_TIMEOUT = 3600
ALL_TARGETS = ("backupd", "sync_server", "cairn1", "cairn3r1", "cairn3r2")
OPTIONS = (("--users", "CAIRN_BENCH_USERS", int, 50),
           ("--messages", "CAIRN_BENCH_MESSAGES", int, 200),
           ("--big-mb", "CAIRN_BENCH_BIG_MB", float, 6),
           ("--seed", "CAIRN_BENCH_SEED", str, "1"),
           ("--targets", "CAIRN_BENCH_TARGETS", str, ",".join(ALL_TARGETS)))
CAIRN_SHAPES = {"cairn1": (1, 1), "cairn3r1": (3, 1), "cairn3r2": (3, 2)}


# ------------------------------------------------------------ processes

def proc_cpu(pid):
    """Seconds of CPU of pid and of its reaped children (utime + stime +
    cutime + cstime); 0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def proc_children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def proc_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakSampler:
    """Samples VmHWM of some pids and of their children (a Cyrus master
    forks one server per connection) until stopped; peak in KiB."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self):
        for pid in self.pids:
            for p in [pid] + proc_children(pid):
                self.peak = max(self.peak, proc_hwm_kib(p))

    def _run(self):
        while not self._stop.wait(0.05):
            self._sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


# --------------------------------------------------------------- targets

class CyrusTarget:
    """A Cyrus backupd or sync_server instance in the lab."""

    def __init__(self, lab, source, kind, name):
        self.kind, self.source, self.channel = kind, source, name
        if kind == "backupd":
            self.instance = lab.add_backup(name)
        else:
            self.instance = lab.add_replica(name)
        self.instance.prepare()
        self.instance.start()
        source.set_channel(name, *self.instance.csync_address)

    def processes(self):
        return {self.kind: self.instance.process.pid}

    def cpu(self):
        """{process: CPU seconds}: master with its reaped children plus
        the running ones (Cyrus keeps a service process for later
        connections)."""
        master = self.instance.process.pid
        return {self.kind: proc_cpu(master) + sum(
            proc_cpu(child) for child in proc_children(master))}

    def disk_bytes(self):
        if self.kind == "backupd":
            return tree_bytes(self.instance.data_dir)
        return tree_bytes(os.path.join(self.instance.dir, "spool"))

    def verify(self):
        if self.kind != "backupd":
            return None
        return lambda: check_tool(self.instance.ctl_backups(
            "verify", "-A", timeout=SYNC_TIMEOUT))

    def compact(self):
        if self.kind != "backupd":
            return None
        return lambda: check_tool(self.instance.ctl_backups(
            "compact", "-F", "-A", timeout=SYNC_TIMEOUT))

    def guids(self):
        """{user: set of GUIDs in the backup's index} (backupd only)."""
        if self.kind != "backupd":
            return None
        return {user: index_guids(path)
                for user, path in self.instance.backup_files().items()}

    def close(self):
        self.instance.stop()
        for sub in ("data", "spool"):
            shutil.rmtree(os.path.join(self.instance.dir, sub),
                          ignore_errors=True)


class CairnTarget:
    """A cairn cluster (router + nodes) of one shape."""

    def __init__(self, binaries, source, kind, name):
        nodes, replicas = CAIRN_SHAPES[kind]
        self.kind, self.source, self.channel = kind, source, name
        quiet = {"log_level": "info"}
        self.cluster = cairncluster.Cluster(
            binaries, nodes=nodes, replicas=replicas, router_settings=quiet,
            node_settings=quiet, prefix="cairn-bench-")
        self.cluster.start()
        source.set_channel(name, *self.cluster.csync_address)

    def processes(self):
        return {name: d.pid for name, d in self.cluster.daemons.items()}

    def cpu(self):
        return {name: proc_cpu(pid) for name, pid in self.processes().items()}

    def disk_bytes(self):
        return self.cluster.data_bytes()[0]

    def verify(self):
        return lambda: check_run(self.cluster.cairnctl(
            "verify", "-q", "--full", timeout=SYNC_TIMEOUT))

    def compact(self):
        return lambda: check_run(self.cluster.cairnctl(
            "compact", "-q", timeout=SYNC_TIMEOUT))

    def guids(self):
        """{user: GUIDs in the user's index} on the first node holding it."""
        result = {}
        for node, files in sorted(self.cluster.user_files().items()):
            for user, path in files.items():
                result.setdefault(user, index_guids(path))
        return result

    def close(self):
        self.cluster.close()


def index_guids(data_file):
    db = sqlite3.connect("file:%s.index?mode=ro" % data_file, uri=True,
                         timeout=10)
    try:
        return {row[0] for row in db.execute("SELECT guid FROM message")}
    finally:
        db.close()


def check_tool(result):
    if not result.ok:
        raise AssertionError(str(result))


def check_run(completed):
    if completed.returncode != 0:
        raise AssertionError("%s\n%s%s" % (completed.args, completed.stdout,
                                           completed.stderr))


# ----------------------------------------------------------------- mail

def populate(source, users, messages, seed, big_mb):
    """Appends the mail set over IMAP (4 users at a time); returns
    ({user: set of GUIDs}, message count, raw bytes)."""
    expected, totals = {}, [0, 0]
    lock = threading.Lock()

    def one_user(user, batch):
        conn = source.imap(user)
        try:
            for folder in mailgen.FOLDERS[1:]:
                cyruslab.check_ok(*conn.create("INBOX.%s" % folder),
                                  "CREATE")
            for m in batch:
                box = "INBOX" if m.folder == "INBOX" else "INBOX." + m.folder
                flags = "(%s)" % " ".join(m.flags) if m.flags else None
                cyruslab.check_ok(*conn.append(
                    box, flags, imaplib.Time2Internaldate(m.internaldate),
                    m.body), "APPEND")
        finally:
            conn.logout()
        with lock:
            expected[user] = {hashlib.sha1(m.body).hexdigest()
                              for m in batch}
            totals[0] += len(batch)
            totals[1] += sum(len(m.body) for m in batch)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one_user, user, batch) for user, batch in
                   mailgen.generate(users, messages, seed, big_mb)]
        for future in futures:
            future.result()
    return expected, totals[0], totals[1]


# --------------------------------------------------------------- phases

class Row:
    def __init__(self, phase, target, wall, client, servers, peak_kib,
                 disk, messages, raw):
        self.phase, self.target, self.wall = phase, target, wall
        self.client, self.servers, self.peak_kib = client, servers, peak_kib
        self.disk, self.messages, self.raw = disk, messages, raw

    @property
    def server_cpu(self):
        return sum(self.servers.values())


def measure(phase, target, work, messages, raw):
    """Runs work() against target and returns its Row."""
    pids = target.processes()
    before = target.cpu()
    client_before = children_cpu()
    sampler = PeakSampler(pids.values())
    started = time.monotonic()
    work()
    wall = time.monotonic() - started
    peak = sampler.stop()
    client = children_cpu() - client_before
    servers = {name: cpu - before[name]
               for name, cpu in target.cpu().items()}
    row = Row(phase, target.kind, wall, client, servers, peak,
              target.disk_bytes(), messages, raw)
    print("# %-12s %-11s %7.2fs  client %.2fs  servers %s  peak %.0f MiB"
          % (phase, target.kind, wall, client,
             " ".join("%s %.2fs" % kv for kv in sorted(servers.items())),
             peak / 1024.0), flush=True)
    return row


def sync_users(source, channel, users, parallel=1):
    """`sync_client -u USER` for every user, `parallel` at a time."""
    work = queue.Queue()
    for user in users:
        work.put(user)

    def worker():
        while True:
            try:
                user = work.get_nowait()
            except queue.Empty:
                return
            r = source.sync_client(users=[user], channel=channel,
                                   verbose=False, timeout=SYNC_TIMEOUT)
            if not r.ok:
                raise AssertionError("sync_client -u %s: %s" % (user, r))

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        for future in [pool.submit(worker) for _ in range(parallel)]:
            future.result()


def sync_all(source, channel):
    r = source.sync_client(channel=channel, all_users=True, verbose=False,
                           timeout=SYNC_TIMEOUT)
    if not r.ok:
        raise AssertionError("sync_client -A: %s" % r)


def check_guids(target, expected, extra=0):
    """Every delivered GUID is in the target's index, and in cairn's
    exactly `extra` more per user (the incremental messages): backupd's
    -A keeps other users' messages in a user's file too."""
    got = target.guids()
    if got is None:
        return
    for user, guids in expected.items():
        have = got.get(user, set())
        missing = guids - have
        exact = target.kind.startswith("cairn")
        if missing or exact and len(have) != len(guids) + extra:
            raise AssertionError("%s: %s holds %d messages, %d delivered "
                                 "(+%d new), %d missing"
                                 % (target.kind, user, len(have), len(guids),
                                    extra, len(missing)))


# ---------------------------------------------------------------- table

def print_table(rows):
    base = {(r.phase, r.target): r for r in rows}
    header = ("%-12s %-11s %8s %7s %7s %7s %8s %7s %8s %7s %8s %8s"
              % ("phase", "target", "wall s", "cli cpu", "srv cpu",
                 "ms/MB", "msg/s", "MB/s", "disk MB", "RSS MB",
                 "x backupd", "x syncsrv"))
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        mb = r.raw / 1e6
        ratios = []
        for other in ("backupd", "sync_server"):
            ref = base.get((r.phase, other))
            ratios.append("%8.2f" % (ref.wall / r.wall)
                          if ref and r.target.startswith("cairn")
                          and r.wall > 0 else "%8s" % "-")
        print("%-12s %-11s %8.2f %7.2f %7.2f %7.1f %8.0f %7.1f %8.1f %7.1f "
              "%s %s" % (r.phase, r.target, r.wall, r.client, r.server_cpu,
                         1000.0 * r.server_cpu / mb if mb else 0.0,
                         r.messages / r.wall if r.wall else 0.0,
                         mb / r.wall if r.wall else 0.0, r.disk / 1e6,
                         r.peak_kib / 1024.0, ratios[0], ratios[1]))
    print("(x backupd, x syncsrv: that target's wall / cairn's wall, more "
          "is faster; ms/MB: server CPU per raw MB; RSS: peak of any one "
          "server process)")


# ----------------------------------------------------------------- main

def parse_args(rest):
    """Sizes from the command line, each overridden by its environment
    variable when set (so the ctest command's small size can be run at
    full size without editing it), else the full-size default."""
    parser = argparse.ArgumentParser()
    for option, variable, kind, default in OPTIONS:
        parser.add_argument(option, type=kind, default=None,
                            help="default %s, or $%s" % (default, variable))
    args = parser.parse_args(rest)
    for option, variable, kind, default in OPTIONS:
        name = option[2:].replace("-", "_")
        if os.environ.get(variable):
            setattr(args, name, kind(os.environ[variable]))
        elif getattr(args, name) is None:
            setattr(args, name, kind(default))
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        parser.error("unknown targets %s (known: %s)"
                     % (sorted(unknown), ", ".join(ALL_TARGETS)))
    return args


def main():
    cyruslab.skip_unless_runnable()
    binaries, rest = cairncluster.binaries_from_argv()
    args = parse_args(rest)
    rows, targets = [], []
    users = mailgen.user_names(args.users)
    with cyruslab.Lab(prefix="cairn-bench-") as lab:
        source = lab.add_source()
        lab.start()

        def make(kind, name):
            if kind.startswith("cairn"):
                target = CairnTarget(binaries, source, kind, name)
            else:
                target = CyrusTarget(lab, source, kind, name)
            targets.append(target)
            return target

        started = time.monotonic()
        expected, count, raw = populate(source, args.users, args.messages,
                                        args.seed, args.big_mb)
        print("# mail set: %d users, %d messages, %.1f MB raw, appended in "
              "%.1fs" % (args.users, count, raw / 1e6,
                         time.monotonic() - started), flush=True)
        try:
            main_targets = {}
            for n, kind in enumerate(args.targets):
                for mode in ("x4", "A"):
                    target = make(kind, "t%d%s" % (n, mode.lower()))
                    if mode == "x4":
                        work = lambda t=target: sync_users(  # noqa: E731
                            source, t.channel, users, parallel=4)
                    else:
                        work = lambda t=target: sync_all(  # noqa: E731
                            source, t.channel)
                    rows.append(measure("full " + ("-u x4" if mode == "x4"
                                                   else "-A"),
                                        target, work, count, raw))
                    check_guids(target, expected)
                    target.close()
                target = make(kind, "t%dseq" % n)
                main_targets[kind] = target
                rows.append(measure("full -u x1", target,
                                    lambda t=target: sync_users(
                                        source, t.channel, users),
                                    count, raw))
                check_guids(target, expected)
            for kind, target in main_targets.items():
                rows.append(measure("unchanged", target,
                                    lambda t=target: sync_users(
                                        source, t.channel, users),
                                    count, 0))
            # only the new messages in each channel's sync log
            shutil.rmtree(os.path.join(source.dir, "conf", "sync"),
                          ignore_errors=True)
            new_raw = 0
            for user in users:
                body = mailgen.incremental(user, 1, args.seed)
                new_raw += len(body)
                source.deliver(user, body)
            for kind, target in main_targets.items():
                # TODO(issue 14): one rolling `-R -1` pass here left
                # cairn's targets without the new messages (sync_client
                # exited 0 in 0.2 s); until that is understood the pass is
                # `-u` for the users with new mail
                rows.append(measure("incremental", target,
                                    lambda t=target: sync_users(
                                        source, t.channel, users),
                                    len(users), new_raw))
                check_guids(target, expected, extra=1)
            for phase in ("verify", "compact"):
                for kind, target in main_targets.items():
                    work = getattr(target, phase)()
                    if work:
                        rows.append(measure(phase, target, work,
                                            count + len(users),
                                            raw + new_raw))
        finally:
            for target in targets:
                target.close()
    print_table(rows)
    print("ok - every sync_client and tool run succeeded; cairn's and "
          "backupd's indexes hold every delivered message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
