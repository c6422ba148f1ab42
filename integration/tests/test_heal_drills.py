#!/usr/bin/env python3
"""Damage drills (issue 16, part 3): a node's scrub finds damage on its
own and heals it node to node from a good replica; with no good replica
it reports the user damaged and touches nothing.

One cluster serves every drill: 3 nodes, replicas 2, [scrub] enabled
(interval 7d, so nothing runs until asked; rate 256K), users backed up
by a real Cyrus sync_client.  Every node is stopped (SIGTERM), one
replica of each drill user is damaged on disk, and the nodes start
again:
  flip   one byte flipped in the middle of the data file
  trunc  the data file cut to half its size
  index  the index deleted (the store rebuilds it from the data file)
  badidx the index's pages overwritten with garbage from byte 1024 on
  gone   the data file deleted
  swap   the data file and index replaced by another user's
  both   one byte flipped on BOTH replicas (no good copy anywhere)
Then SIGUSR1 starts a scrub round on every node; the test waits for
each node's log line (found, healed, no good replica), never for a
time.  While it heals, sync_client -u flip runs again and again with new
mail (the heal's "writes during the heal" drill), and sync_client -u
for the other users keeps working.

Asserted for each healed user: Cyrus's `ctl_backups verify` accepts the
healed file (with a hang guard; never pointed at a damaged file),
`cairnctl verify` says the replicas agree, the healed replica equals the
source (mailboxes, UIDs, GUIDs, flags) and its peer row for row, and no
set-aside file is left.  For "both": each node logs NO GOOD REPLICA,
both files are byte-identical to the damaged ones, `cairnctl status`
says DAMAGED with the user's name, sync_client -u both gets a NO
(IMAP_MAILBOX_LOCKED, retryable) while the others sync.  Printed: time
to detection and to heal of each drill, and the scrub's read rate
against [scrub] rate.

usage: test_heal_drills.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import base64
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import backupcheck  # noqa: E402
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402

STARTED = time.monotonic()
DRILLS = ["flip", "trunc", "index", "badidx", "gone", "swap"]
BOTH = "both"
OTHERS = ["quiet1", "quiet2"]
USERS = DRILLS + [BOTH] + OTHERS
SCRUB_RATE = 256 * 1024
BIG_MESSAGE = 2 * 1024 * 1024
HANG_GUARD = 180.0  # seconds: a broken build, not a time asserted


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        middle = f.tell() // 2
        f.seek(middle)
        byte = f.read(1)
        f.seek(middle)
        f.write(bytes([byte[0] ^ 0x5A]))


def damage(kind, path, other_path):
    if kind in ("flip", BOTH):
        flip_byte(path)
    elif kind == "trunc":
        os.truncate(path, os.path.getsize(path) // 2)
    elif kind == "index":
        os.unlink(path + ".index")
    elif kind == "badidx":
        with open(path + ".index", "r+b") as f:
            f.seek(1024)
            f.write(os.urandom(max(4096, os.path.getsize(path + ".index")
                                   - 1024)))
    elif kind == "gone":
        os.unlink(path)
    elif kind == "swap":
        for suffix in ("", ".index"):
            with open(other_path + suffix, "rb") as f:
                data = f.read()
            with open(path + suffix, "wb") as f:
                f.write(data)


class LogWatch:
    """Polls every node's log (from the offsets taken at creation) and
    notes the monotonic time each pattern first matched."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.offsets = {n: len(cluster.daemons[n].log())
                        for n in cluster.node_names}
        self.seen = {}

    def text(self, node):
        return self.cluster.daemons[node].log()[self.offsets[node]:]

    def poll(self, wants):
        """wants: {key: (node, regex)}; records the first match time."""
        now = time.monotonic()
        for key, (node, pattern) in wants.items():
            if key not in self.seen and re.search(pattern, self.text(node),
                                                  re.M):
                self.seen[key] = now

    def wait(self, wants, timeout=HANG_GUARD):
        deadline = time.monotonic() + timeout
        while True:
            self.poll(wants)
            if all(k in self.seen for k in wants):
                return
            if time.monotonic() > deadline:
                missing = {k: v for k, v in wants.items()
                           if k not in self.seen}
                raise AssertionError("never logged: %r\n%s"
                                     % (missing, self.cluster.logs(80)))
            time.sleep(0.05)


class SyncDuringHeal(threading.Thread):
    """sync_client -u USER again and again, a new message before each
    pass; remembers which messages were acknowledged (a pass that
    exited 0 after they were delivered) and how many passes failed."""

    def __init__(self, source, user):
        super().__init__(daemon=True)
        self.source, self.user = source, user
        self.stop_event = threading.Event()
        self.delivered = 0
        self.acknowledged = 0
        self.failed = 0
        self.passes = 0
        self.error = None

    def run(self):
        try:
            while not self.stop_event.is_set():
                self.delivered += 1
                self.source.deliver(self.user, labmail.make_message(
                    self.user, 100 + self.delivered))
                r = self.source.sync_client([self.user], channel="cairn",
                                            timeout=60)
                self.passes += 1
                if r.ok:
                    self.acknowledged = self.delivered
                else:
                    self.failed += 1
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = e


def big_message(user):
    """A message of BIG_MESSAGE bytes that gzip cannot shrink (random
    base64), so that the data file is that big too."""
    body = base64.encodebytes(os.urandom(BIG_MESSAGE * 3 // 4))
    return (b"From: Big <big@cyruslab.example>\r\n"
            b"To: %s <%s@cyruslab.example>\r\n"
            b"Subject: big\r\nMessage-ID: <%s.big@cyruslab.example>\r\n"
            b"Date: Sun, 01 Jun 2025 12:00:00 +0000\r\n\r\n"
            % (user.encode(), user.encode(), user.encode())
            + body.replace(b"\n", b"\r\n"))


def live_messages(data_file, user):
    snapshot = cairncluster.snapshot_from_index(
        cairncluster.index_state(data_file))
    return len(snapshot.get("user.%s" % user, {}).get("messages", []))


def log_time(line):
    """Seconds of a log line's UTC timestamp (2026-12-07T23:33:18.898Z)."""
    m = re.match(r"\S+T(\d+):(\d+):(\d+\.\d+)Z", line)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def scrub_rates(cluster, watch):
    """Per node, from its log since the round began: bytes of the users
    the scrub found clean ('scrub of USER: ok, N bytes in M ms') and the
    read rate over the round (the bytes of all but the last user over the
    time from the SIGUSR1 line to the last user's line: the pause after
    a user of N bytes is N / rate)."""
    rates = {}
    for node in cluster.node_names:
        lines = watch.text(node).splitlines()
        start = next((log_time(line) for line in lines
                      if "SIGUSR1: scrub round started" in line), None)
        done = [(log_time(line), int(m.group(1))) for line in lines
                for m in [re.search(r"scrub of \S+: ok, (\d+) bytes in",
                                    line)] if m]
        if start is None or len(done) < 2:
            continue
        span = done[-1][0] - start
        rates[node] = (sum(b for _, b in done), len(done),
                       sum(b for _, b in done[:-1]) / span if span > 0
                       else 0.0)
    return rates


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(
            binaries, nodes=3, replicas=2,
            router_settings={"node_answer_timeout": "2s"},
            sections={"scrub": {"enabled": "yes", "interval": "7d",
                                "rate": str(SCRUB_RATE), "level": "full",
                                "heal": "yes"}}) as cluster, \
            cyruslab.Lab() as lab:
        cluster.start()
        source = lab.add_source(channels={"cairn": cluster.csync_address})
        lab.start()
        labmail.populate(source, USERS, messages=6, extras=False,
                         sieve=False)
        # flip gets a big message: its pull, paced at [scrub] rate, lasts
        # seconds, and the sync_client passes during the heal meet it
        source.deliver("flip", big_message("flip"))
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "first sync_client -u of %d users" % len(USERS), r)
        # a second pass, a second later: two chunks with different update
        # stamps (a truncated copy is then older, not just different)
        time.sleep(1.1)  # a distinct stamp, not a wait for an event
        for user in USERS:
            source.deliver(user, labmail.make_message(user, 40))
        r = source.sync_client(USERS, channel="cairn")
        expect(r.ok, "second sync_client -u", r)
        r = cluster.cairnctl("verify", "--full", *USERS)
        expect(r.returncode == 0, "cairnctl verify --full: replicas agree "
               "before the damage", r.stdout + r.stderr)

        holders = cluster.holders()
        files = cluster.user_files()
        target, good = {}, {}
        for user in DRILLS:
            target[user], good[user] = holders[user][0], holders[user][1]
        other_of_swap = next(u for u in OTHERS if u in files[target["swap"]])
        for node in cluster.node_names:
            cluster.stop_node(node, how="term")
        for user in DRILLS:
            path = files[target[user]][user]
            damage(user, path, files[target[user]].get(other_of_swap))
            print("damaged %s on %s: %s" % (user, target[user], user))
        both_digests = {}
        for node in holders[BOTH]:
            damage(BOTH, files[node][BOTH], None)
            both_digests[node] = sha256(files[node][BOTH])
        offset = len(cluster.router_log())
        for node in cluster.node_names:
            cluster.start_node(node)
        for node in cluster.node_names:
            cluster.wait_node_up(node, offset)

        watch = LogWatch(cluster)
        syncing = SyncDuringHeal(source, "flip")
        syncing.start()
        while syncing.passes < 1 and syncing.is_alive():
            time.sleep(0.05)
        round_started = time.monotonic()
        for node in cluster.node_names:
            cluster.daemons[node].signal(signal.SIGUSR1)

        found, healed = {}, {}
        for user in DRILLS:
            node = target[user]
            found[user] = (node, r"scrub: %s is damaged|heal: %s differs"
                           % (user, user) if user != "index" else
                           r"scrub of %s: ok" % user)
            healed[user] = (node, r"heal: %s healed from" % user
                            if user != "index" else
                            r"heal: %s agrees with its replicas" % user)
        nothing = {("both", n): (n, r"heal: %s is DAMAGED on this node and "
                                 r"NO GOOD REPLICA" % BOTH)
                   for n in holders[BOTH]}
        wants = {}
        wants.update({("found", u): v for u, v in found.items()})
        wants.update({("healed", u): v for u, v in healed.items()})
        wants.update(nothing)
        watch.wait(wants)
        syncing.stop_event.set()
        syncing.join(120)
        expect(syncing.error is None and not syncing.is_alive(),
               "sync_client -u flip ran %d passes during the heal (%d got "
               "a NO while it was quarantined)" % (syncing.passes,
                                                   syncing.failed),
               repr(syncing.error))
        r = source.sync_client(["flip"], channel="cairn")
        expect(r.ok, "sync_client -u flip after the heal", r)

        print("\n%-6s %-6s %-6s %14s %12s" % ("DRILL", "NODE", "FROM",
                                             "DETECTED (s)", "HEALED (s)"))
        for user in DRILLS:
            print("%-6s %-6s %-6s %14.2f %12.2f"
                  % (user, target[user], good[user],
                     watch.seen[("found", user)] - round_started,
                     watch.seen[("healed", user)] - round_started))
        for node in holders[BOTH]:
            print("%-6s %-6s %-6s %14.2f %12s"
                  % (BOTH, node, "-",
                     watch.seen[("both", node)] - round_started,
                     "no source"))
        for node, (total, users, rate) in sorted(
                scrub_rates(cluster, watch).items()):
            print("scrub %s: %d clean users, %d bytes; read rate %.0f KB/s "
                  "against [scrub] rate %d KB/s" % (node, users, total,
                                                   rate / 1024,
                                                   SCRUB_RATE // 1024))
        print()
        files = cluster.user_files()
        for user in DRILLS:
            healed_file = files[target[user]][user]
            peer_file = files[good[user]][user]
            diff = cairncluster.index_row_differences(
                cairncluster.index_rows(peer_file),
                cairncluster.index_rows(healed_file))
            expect(not diff, "%s: the healed copy on %s equals %s's row for "
                   "row" % (user, target[user], good[user]),
                   "\n".join(diff[:20]))
            want = cairncluster.comparable_snapshot(
                source.snapshot(users=[user]))
            got = cairncluster.snapshot_from_index(
                cairncluster.index_state(healed_file))
            expect(got == want, "%s: the healed copy equals the source "
                   "(%d mailboxes)" % (user, len(want)),
                   "source %r\ncairn  %r" % (want, got))
            left = [n for n in os.listdir(os.path.dirname(healed_file))
                    if ".replaced-" in n and n.startswith(user + "_")]
            expect(not left, "%s: nothing set aside is left" % user,
                   repr(left))
        report = backupcheck.check_backup_files(
            {u: files[target[u]][u] for u in DRILLS}, list_all=False,
            tool_timeout=30)
        expect(report.accepted, "Cyrus's ctl_backups verify accepts every "
               "healed file (hang guard 30 s each)",
               "\n".join("%s: %s" % (u, c.verify_status)
                         for u, c in report.users.items()))
        r = cluster.cairnctl("verify", "--full", *(DRILLS + OTHERS))
        expect(r.returncode == 0, "cairnctl verify --full: the replicas of "
               "every healed user agree", r.stdout + r.stderr)
        want = len(source.snapshot(users=["flip"])["user.flip"]["messages"])
        counts = {n: live_messages(files[n]["flip"], "flip")
                  for n in holders["flip"]}
        expect(set(counts.values()) == {want},
               "flip: every message is on both replicas (%r, the source "
               "has %d; %d of the %d delivered during the heal were "
               "acknowledged while it ran, the rest by the pass after it)"
               % (counts, want, syncing.acknowledged, syncing.delivered))

        for node in holders[BOTH]:
            expect(os.path.exists(files[node][BOTH]) and
                   sha256(files[node][BOTH]) == both_digests[node],
                   "%s: %s's damaged file is still there, byte for byte"
                   % (BOTH, node))
        r = cluster.cairnctl("status")
        expect(re.search(r"DAMAGED on \S+: %s: .*no good replica" % BOTH,
                         r.stdout) is not None,
               "cairnctl status: %s" % "; ".join(
                   line for line in r.stdout.splitlines()
                   if line.startswith(("heal:", "DAMAGED"))),
               r.stdout + r.stderr)
        r = cluster.cairnctl("status", "--json")
        nodes = {n["name"]: n for n in json.loads(r.stdout)["nodes"]}
        heal = {name: n["heal"] for name, n in nodes.items()}
        pulled = len(DRILLS) - 1  # "index" rebuilds itself, no pull
        expect(sum(h["ok"] for h in heal.values()) == pulled and
               sum(h["damaged_no_source"] for h in heal.values()) == 2 and
               all(any(u.startswith(BOTH + ":") for u in
                       heal[n]["damaged_users"]) for n in holders[BOTH]),
               "cairnctl status --json: %d healed (index rebuilt itself), 2 "
               "with no good replica, %s listed on %s"
               % (pulled, BOTH, " and ".join(holders[BOTH])), r.stdout)
        source.deliver(BOTH, labmail.make_message(BOTH, 90))
        r = source.sync_client([BOTH], channel="cairn")
        text = r.stdout + r.stderr if hasattr(r, "stdout") else str(r)
        expect(not r.ok, "sync_client -u %s is refused (exit %s)"
               % (BOTH, getattr(r, "returncode", "?")), text)
        for user in OTHERS:
            source.deliver(user, labmail.make_message(user, 91))
        r = source.sync_client(OTHERS, channel="cairn")
        expect(r.ok, "sync_client -u of the other users goes on", r)
        router = cluster.router_log()
        refusals = re.findall(r"GET USER of %s: node (\S+) service "
                              r"unavailable" % BOTH, router)
        expect(refusals and set(refusals) <= set(holders[BOTH]),
               "the refusal is the quarantine's retryable NO (service "
               "unavailable, IMAP_MAILBOX_LOCKED) from %s"
               % " and ".join(sorted(set(refusals))), text[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
