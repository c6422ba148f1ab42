#!/usr/bin/env python3
"""Real Cyrus 3.6 sync_client -> the router's session layer.

A Cyrus source server (integration/lib/cyruslab.py) replicates users to
sync_peer, the router with a recording stub instead of storage.  For both
namespaces (unixhierarchysep no / yes) and with a dotted userid, checks that
sync_client gets through the banner, SCRAM-SHA-512 (its own choice from the
list backupd advertises) and COMPRESS DEFLATE, and that every request it
sends is parsed and resolved to the right user.  Then the IMAP probe
(sync_try_imap: 1) must not cost the 10 s client timeout.

Finally end to end with cairn's own programs: sync_client -> cairn-router
-> cairn-node (one-node ring made by cairnctl): the first run uploads, a
second run finds everything in place and uploads nothing, a new message
is the only thing the third run sends.

usage: test_sync_client.py sync_peer cairn-router cairn-node cairnctl
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "lib"))
import cyruslab  # noqa: E402

STARTED = time.monotonic()


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


class Peer:
    """sync_peer as a child process; lines of its output are collected."""

    def __init__(self, path):
        self.spool = tempfile.mkdtemp(prefix="cairn-peer-spool-")
        self.process = subprocess.Popen(
            [path, cyruslab.REPLICATION_USER, cyruslab.REPLICATION_PASSWORD,
             self.spool], stdout=subprocess.PIPE)
        self.fd = self.process.stdout.fileno()
        self.pending = b""
        self.lines = []
        self.collect(quiet=5.0, until_first=True)
        first = self.lines.pop(0).split() if self.lines else []
        if len(first) != 2 or first[0] != "READY":
            raise AssertionError("sync_peer did not start: %r" % first)
        self.port = int(first[1])

    def collect(self, quiet=0.5, until_first=False):
        """Read output until nothing arrives for `quiet` seconds (raw
        reads: a buffered reader would hide lines from select)."""
        while not (until_first and self.lines):
            ready, _, _ = select.select([self.fd], [], [], quiet)
            if not ready:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.pending += chunk
            *whole, self.pending = self.pending.split(b"\n")
            self.lines += [line.decode("utf-8", "replace") for line in whole]
        return self.lines

    def requests(self):
        return [line[len("REQUEST "):] for line in self.lines
                if line.startswith("REQUEST ")]

    def close(self):
        """SIGTERM stops the peer's loop: it must exit 0 (under ASan this
        also means no leak and no memory error was reported)."""
        self.process.terminate()
        status = self.process.wait(timeout=10)
        left = os.listdir(self.spool)
        shutil.rmtree(self.spool, ignore_errors=True)
        expect(status == 0, "sync_peer exits 0 on SIGTERM (got %s)" % status)
        expect(not left, "the spool is empty afterwards", repr(left))


def replicate(peer_path, unixhierarchysep, users):
    peer = Peer(peer_path)
    try:
        with cyruslab.Lab(unixhierarchysep=unixhierarchysep) as lab:
            source = lab.add_source(
                channels={"backup": ("127.0.0.1", peer.port)})
            lab.start()
            for user in users:
                source.deliver(user, cyruslab.make_message(user, 1),
                               cyruslab.make_message(user, 2))
            label = "unixhierarchysep=%s" % ("yes" if unixhierarchysep
                                             else "no")
            for user in users:
                r = source.sync_client(users=[user], channel="backup")
                expect(r.ok, "%s: sync_client -u %s exits 0" % (label, user),
                       "%s\n%s" % (r, "\n".join(peer.collect())))
            lines = peer.collect()
            log = "\n".join(lines)
            expect(any(line == "EVENT repluser: login: repluser SCRAM-SHA-512"
                       for line in lines),
                   "%s: sync_client logged in with SCRAM-SHA-512" % label, log)
            expect(any(line.endswith("COMPRESS DEFLATE active")
                       for line in lines),
                   "%s: COMPRESS DEFLATE switched on" % label, log)
            expect(not any("malformed" in line or "badlogin" in line
                           for line in lines),
                   "%s: no malformed command, no failed login" % label, log)
            requests = peer.requests()
            for user in users:
                mine = [r for r in requests
                        if r.split()[2] == "user=" + user]
                expect(mine and mine[0].startswith("GET USER user=%s " % user),
                       "%s: GET USER %s comes first" % (label, user), log)
                mailboxes = [r for r in mine
                             if r.startswith("APPLY MAILBOX ")]
                expect(mailboxes, "%s: APPLY MAILBOX resolved to %s"
                       % (label, user), log)
                # The bodies wait in the stage and come with the MAILBOX
                # whose records name them.
                files = sum(int(r.split("files=")[1].split()[0])
                            for r in mailboxes)
                verified = sum(int(r.split("verified=")[1])
                               for r in mailboxes)
                expect(files == 2 and verified == 2,
                       "%s: both bodies of %s staged and sent with its "
                       "MAILBOX, SHA-1 = GUID (%d, %d)"
                       % (label, user, files, verified), log)
                expect(not any(r.startswith("APPLY MESSAGE ") for r in mine),
                       "%s: APPLY MESSAGE is not forwarded alone" % label,
                       log)
            known = ["user=" + u for u in users]
            expect(all(r.split()[2] in known for r in requests),
                   "%s: every request resolved to a replicated user" % label,
                   log)
    finally:
        peer.close()


def probe_is_fast(peer_path):
    """sync_try_imap: 1 makes sync_client speak IMAP first on the csync
    port; the router closes on 'C01 CAPABILITY', so no 10 s stall."""
    peer = Peer(peer_path)
    try:
        with cyruslab.Lab() as lab:
            source = lab.add_source(
                channels={"backup": ("127.0.0.1", peer.port)})
            lab.start()
            source.deliver("probe", cyruslab.make_message("probe", 1))
            source.set_config(backup_sync_try_imap="1")
            started = time.monotonic()
            r = source.sync_client(users=["probe"], channel="backup")
            took = time.monotonic() - started
            log = "\n".join(peer.collect())
            expect(r.ok, "probe: sync_client exits 0", "%s\n%s" % (r, log))
            expect("IMAP probe" in log, "probe: the IMAP probe was seen", log)
            expect(took < 8.0, "probe: no 10 s stall (took %.1fs)" % took)
    finally:
        peer.close()


CLUSTER_CONF = """[router]
servername = cairn.test
spool_dir = spool
ring_dir = rings
log_level = debug
[channel backup]
listen = 127.0.0.1:%(csync)d
sasl_user = %(user)s
sasl_password = %(password)s
sasl_mechanisms = SCRAM-SHA-512, PLAIN
destinations = main
[destination main]
nodes = node1
replicas = 1
[node node1]
endpoint = tcp://127.0.0.1:%(node)d
data_dir = node1
"""


def wait_for(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.recv(1)  # the banner; then close without a word
        return True
    except OSError:
        return False


def stop(process, name):
    process.terminate()
    status = process.wait(timeout=15)
    expect(status == 0, "%s exits 0 on SIGTERM (got %s)" % (name, status))


def end_to_end(router_path, node_path, cairnctl_path):
    work = tempfile.mkdtemp(prefix="cairn-e2e-")
    csync, node = cyruslab.free_port(), cyruslab.free_port()
    conf = os.path.join(work, "cluster.conf")
    with open(conf, "w") as f:
        f.write(CLUSTER_CONF % {"csync": csync, "node": node,
                                "user": cyruslab.REPLICATION_USER,
                                "password": cyruslab.REPLICATION_PASSWORD})
    os.makedirs(os.path.join(work, "rings"))
    subprocess.run([cairnctl_path, "-c", conf, "ring", "create",
                    os.path.join(work, "rings", "main.ring"),
                    "--from-config", "main"], check=True,
                   capture_output=True)
    router_log = open(os.path.join(work, "router.log"), "w+")
    node_log = open(os.path.join(work, "node.log"), "w+")
    ready = os.path.join(work, "node.ready")
    node_process = subprocess.Popen(
        [node_path, "-c", conf, "-n", "node1", "-f", "-w", ready,
         "--allow-root"],
        stdout=node_log, stderr=subprocess.STDOUT, cwd=work)
    router_process = None
    try:
        wait_for(lambda: os.path.exists(ready), "cairn-node")
        router_process = subprocess.Popen(
            [router_path, "-c", conf, "--allow-root"], stdout=router_log,
            stderr=subprocess.STDOUT, cwd=work)
        wait_for(lambda: listening(csync), "cairn-router")

        def sent(key):
            router_log.flush()
            with open(router_log.name) as f:
                return f.read().count("] " + key + " user=erin")

        with cyruslab.Lab() as lab:
            source = lab.add_source(channels={"backup": ("127.0.0.1", csync)})
            lab.start()
            source.deliver("erin", cyruslab.make_message("erin", 1),
                           cyruslab.make_message("erin", 2))
            r = source.sync_client(users=["erin"], channel="backup")
            expect(r.ok, "e2e: first sync_client -u erin exits 0", r)
            first = sent("APPLY MESSAGE")
            expect(first >= 1 and sent("APPLY MAILBOX") >= 1,
                   "e2e: the first run uploaded messages and the mailbox")
            r = source.sync_client(users=["erin"], channel="backup")
            expect(r.ok, "e2e: second sync_client -u erin exits 0", r)
            expect(sent("APPLY MESSAGE") == first,
                   "e2e: the second run uploads nothing (state read back "
                   "from the node)")
            source.deliver("erin", cyruslab.make_message("erin", 3))
            r = source.sync_client(users=["erin"], channel="backup")
            expect(r.ok, "e2e: third sync_client -u erin exits 0", r)
            expect(sent("APPLY MESSAGE") == first + 1,
                   "e2e: the third run uploads only the new message")
    except BaseException:
        for log in (router_log, node_log):
            log.flush()
            log.seek(0)
            sys.stderr.write("----- %s\n%s" % (log.name, log.read()[-6000:]))
        raise
    finally:
        if router_process is not None:
            stop(router_process, "cairn-router")
        stop(node_process, "cairn-node")
        router_log.close()
        node_log.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    cyruslab.skip_unless_runnable()
    peer_path = sys.argv[1]
    replicate(peer_path, False, ["alice", "bob"])
    replicate(peer_path, True, ["carol", "dot.user"])
    probe_is_fast(peer_path)
    if len(sys.argv) >= 5:
        end_to_end(sys.argv[2], sys.argv[3], sys.argv[4])
    print("test_sync_client: all passed")


if __name__ == "__main__":
    main()
