#!/usr/bin/env python3
"""cairnctl rebalance on a live cluster without Cyrus: a 4th node joins a
3-node destination (2 replicas) while a csync writer keeps adding mail.

A raw csync client (cairncluster.CsyncClient, SASL PLAIN) writes messages
for 16 users through cairn-router (APPLY MESSAGE + APPLY MAILBOX with all
records so far); a message counts as written only when its APPLY MAILBOX
got OK, and a "NO ... being moved" answer (the router holds the user) is
retried until it is accepted, as sync_client does.  Meanwhile
`cairnctl ring add-node ... -o new.ring` makes the 4-node ring and
`cairnctl rebalance -g 0` moves the users.

Afterwards: every user lives exactly on its new replicas (catalogs), every
message the writer got OK for is in every replica's index, `cairnctl
verify` is ok, old copies stay for the grace (-g 1h) and go when a later
run finds it over (-g 0), a further rebalance changes nothing, and the router's
writes keep working.  The first run is killed (SIGKILL) after two users,
the router is restarted (it persists nothing), and a second run resumes
from the journal.  Figures are printed.

usage: test_rebalance_live.py [--router P] [--node P] [--cairnctl P]
"""
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402

USERS = ["user%02d" % i for i in range(16)]
STARTED = time.monotonic()


def message(user, uid):
    body = ("From: writer@example.org\r\nTo: %s@example.org\r\n"
            "Subject: message %d\r\n\r\n" % (user, uid)).encode()
    body += b"x" * (200 + 37 * uid) + b"\r\n"
    return body, hashlib.sha1(body).hexdigest()


class Writer:
    """Writes messages round-robin over USERS through the router."""

    def __init__(self, port, password):
        self.port, self.password = port, password
        self.records = {u: [] for u in USERS}  # acknowledged (uid, guid, size)
        self.refused = 0      # NO answers (held users), each retried
        self.other_errors = []
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.client = None

    def connect(self):
        self.client = cairncluster.CsyncClient(self.port)
        reply = self.client.login_plain("repluser", self.password)
        if not reply or not reply[-1].startswith(b"OK"):
            raise RuntimeError("login: %r" % reply)

    def write_one(self, user):
        """One message; True when acknowledged, False when refused."""
        uid = len(self.records[user]) + 1
        body, guid = message(user, uid)
        c = self.client
        c.command(b"GET USER " + user.encode())  # the connection's user
        reply = c.command(b"APPLY MESSAGE (%{default " + guid.encode() +
                          b" " + str(len(body)).encode() + b"}\r\n" + body +
                          b")")
        if not reply[-1].startswith(b"OK"):
            return self.refusal(user, "MESSAGE", reply)
        records = self.records[user] + [(uid, guid, len(body))]
        rec = b" ".join(
            b"%%(UID %d MODSEQ %d LAST_UPDATED 1795668590 FLAGS () "
            b"INTERNALDATE 1795668590 SIZE %d GUID %s)"
            % (u, u + 1, s, g.encode()) for u, g, s in records)
        command = (
            b"APPLY MAILBOX %%(UNIQUEID uid%s MBOXNAME user.%s SYNC_CRC 0 "
            b"SYNC_CRC_ANNOT 0 LAST_UID %d HIGHESTMODSEQ %d RECENTUID 0 "
            b"RECENTTIME 0 LAST_APPENDDATE 1795668590 POP3_LAST_LOGIN 0 "
            b"POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 PARTITION default "
            b"ACL \"%s\tlrswipkxtecdan\t\" OPTIONS P QUOTAROOT user.%s "
            b"CREATEDMODSEQ 1 FOLDERMODSEQ 1 RECORD (%s))"
            % (user.encode(), user.encode(), uid, uid + 1, user.encode(),
               user.encode(), rec))
        reply = c.command(command)
        if not reply[-1].startswith(b"OK"):
            return self.refusal(user, "MAILBOX", reply)
        self.records[user] = records
        return True

    def refusal(self, user, what, reply):
        if reply[-1] is None:
            raise ConnectionError("router closed the connection")
        if b"being moved" in reply[-1] or b"LOCKED" in reply[-1]:
            self.refused += 1
        else:
            self.other_errors.append((user, what, reply[-1]))
        return False

    def write_retrying(self, user):
        """Until acknowledged, like sync_client (reconnecting when the
        router restarts)."""
        while not self.stop.is_set() and len(self.other_errors) <= 5:
            try:
                if self.client is None:
                    self.connect()
                if self.write_one(user):
                    return
            except (ConnectionError, OSError, AttributeError):
                self.reconnects += 1
                if self.client is not None:
                    self.client.close()
                self.client = None
            time.sleep(0.02)

    def run(self):
        try:
            while not self.stop.is_set():
                for user in USERS:
                    self.write_retrying(user)
        except Exception as e:  # reported by the test
            self.other_errors.append(("writer", "exception", repr(e)))


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def run_rebalance(cluster, new_ring, grace="0"):
    r = cluster.cairnctl("rebalance", "-d", "main", "-g", grace, new_ring,
                         timeout=120)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r


def main():
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    with cairncluster.Cluster(binaries, nodes=4, replicas=2) as cluster:
        # The ring holds three nodes; node4 runs empty until it joins.
        r = cluster.cairnctl("ring", "create", cluster.ring_file, "-d",
                             "main", "-r", "2", "-n", "node1:100", "-n",
                             "node2:100", "-n", "node3:100")
        check(r.returncode == 0, "ring create: %s%s" % (r.stdout, r.stderr))
        cluster.start()
        writer = Writer(cluster.csync_port, cluster.sasl_password)
        writer.thread.start()
        deadline = time.monotonic() + 20
        while (min(len(v) for v in writer.records.values()) < 3 and
               time.monotonic() < deadline and not writer.other_errors):
            time.sleep(0.05)
        check(not writer.other_errors, "writer: %r" % writer.other_errors)
        before = sum(len(v) for v in writer.records.values())
        new_ring = os.path.join(cluster.dir, "new.ring")
        r = cluster.cairnctl("ring", "add-node", cluster.ring_file,
                             "node4:100", "-o", new_ring)
        check(r.returncode == 0, "add-node: %s%s" % (r.stdout, r.stderr))

        r = cluster.cairnctl("rebalance", "-d", "main", "-n", new_ring)
        check(r.returncode == 0, "dry run: %s%s" % (r.stdout, r.stderr))
        planned = [line.split()[0] for line in r.stdout.splitlines()]
        check(planned, "dry run lists no moving user")
        check(not os.path.exists(new_ring + ".journal"),
              "a dry run wrote the journal")

        # Interrupted: SIGKILL once two users are switched (the journal
        # says so; one may be held at the router, its writes refused,
        # until the next run). One user at a time, so that the kill comes
        # before the end.
        t0 = time.monotonic()
        journal_path = new_ring + ".journal"
        interrupted = subprocess.Popen(
            [binaries.cairnctl, "-c", cluster.config_path, "rebalance",
             "-d", "main", "-g", "0", "-p", "1", new_ring],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while interrupted.poll() is None and time.monotonic() < deadline:
            if os.path.exists(journal_path):
                with open(journal_path) as f:
                    if f.read().count("switched ") >= 2:
                        interrupted.send_signal(signal.SIGKILL)
                        break
            time.sleep(0.005)
        out, err = interrupted.communicate(timeout=60)
        check(interrupted.returncode == -signal.SIGKILL,
              "the run ended before it was interrupted: %s%s" % (out, err))
        with open(new_ring + ".journal") as f:
            journal = f.read()
        check("switched " in journal, "journal: %r" % journal)
        # The router restarts too: it forgets the new ring, the switches
        # and the hold, and routes everybody with the old ring file; the
        # resumed run must replay them and re-check the copies.
        cluster.stop_node("router", how="term")
        cluster.start_router()

        # Resumed with a grace: old copies stay until a later run.
        r = run_rebalance(cluster, new_ring, grace="1h")
        seconds = time.monotonic() - t0
        check(r.returncode == 0, "rebalance failed (%d)" % r.returncode)
        check("committed" in r.stdout, "ring not committed")
        summary = r.stdout.strip()
        time.sleep(0.5)  # the writer goes on over the new ring
        writer.stop.set()
        writer.thread.join(30)
        check(not writer.other_errors, "writer: %r" % writer.other_errors)
        after = sum(len(v) for v in writer.records.values())
        check(after > before, "no write went through during the move")

        placement = cluster.ring_replicas(USERS)  # the ring file, now new
        holders = cluster.holders()
        for user in USERS:
            check(set(placement[user]) <= set(holders.get(user, [])),
                  "%s on %s, ring says %s" % (user, holders.get(user),
                                              placement[user]))
        kept = [u for u in USERS if len(holders[u]) > len(placement[u])]
        check(kept, "no old copy kept for the grace")
        r = cluster.cairnctl("verify", "-r", cluster.ring_file)
        check(r.returncode == 0, "verify -r: %s%s" % (r.stdout, r.stderr))
        # The grace over (-g 0): the old copies go.
        r = run_rebalance(cluster, new_ring)
        check(r.returncode == 0 and "removed %d," % len(kept) in r.stdout,
              "retiring the %d kept copies: %s" % (len(kept), r.stdout))
        holders = cluster.holders()
        for user in USERS:
            check(holders.get(user) == sorted(placement[user]),
                  "%s on %s, ring says %s" % (user, holders.get(user),
                                              placement[user]))
        check(any("node4" in placement[u] for u in USERS),
              "node4 got no user")
        files = cluster.user_files()
        lost = 0
        for user in USERS:
            for node in placement[user]:
                state = cairncluster.index_state(files[node][user])
                stored = {rec["guid"] for box in state["mailboxes"].values()
                          for rec in box["records"]}
                lost += sum(1 for _, g, _ in writer.records[user]
                            if g not in stored)
        check(lost == 0, "%d acknowledged messages missing" % lost)
        r = cluster.cairnctl("verify")
        check(r.returncode == 0, "verify: %s%s" % (r.stdout, r.stderr))

        # Safe to run twice: nothing moves, nothing changes.
        snapshot = cluster.data_file_bytes()
        r = run_rebalance(cluster, new_ring)
        check(r.returncode == 0, "second run failed")
        check("switched 0" in r.stdout and "copies 0" in r.stdout,
              "second run did something: %s" % r.stdout)
        check(cluster.data_file_bytes() == snapshot, "second run changed data")

        statuses = cluster.stop()
        check(all(v == 0 for v in statuses.values()),
              "router and nodes exit 0 on SIGTERM: %r" % statuses)
        print("figures: %d of %d users moved to their new replicas; resumed "
              "run: %s; %d messages acknowledged (%d while moving), %d NO "
              "answers retried, %d reconnects, interrupted + resumed rebalance "
              "%.2f s, "
              "test %.1f s" % (
                  len(planned), len(USERS), summary, after, after - before,
                  writer.refused, writer.reconnects, seconds,
                  time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
