#!/usr/bin/env python3
"""SIGHUP reloads the ring of a live cairn-router (2 nodes, 1 replica).

A raw csync client logs in and stores a mailbox (on one node). The ring
file is replaced by one with 2 replicas and a higher epoch, the router gets
SIGHUP: the same connection goes on, the log says the new epoch is loaded,
and the next write lands on both nodes. Then an invalid ring file and
SIGHUP: refused with a log line, the ring in use is kept, the connection
still works. The router exits 0 at the end.

usage: test_router_sighup.py [--router P] [--node P] [--cairnctl P]
"""
import hashlib
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "lib"))
import cairncluster  # noqa: E402

BODY = b"hello sighup"
GUID = hashlib.sha1(BODY).hexdigest()


def mailbox(modseq):
    return (b"APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.anne LAST_UID 1 "
            b"HIGHESTMODSEQ " + str(modseq).encode() + b" RECENTUID 1 "
            b"RECENTTIME 1795668590 LAST_APPENDDATE 1795668590 "
            b"POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795668591 "
            b"PARTITION default ACL \"anne\tlrswipkxtecdan\t\" OPTIONS P "
            b"SYNC_CRC 0 SYNC_CRC_ANNOT 0 RECORD (%(UID 1 MODSEQ "
            + str(modseq).encode() + b" LAST_UPDATED 1795668590 FLAGS () "
            b"INTERNALDATE 1795668590 SIZE " + str(len(BODY)).encode()
            + b" GUID " + GUID.encode() + b")))")


def ok(reply, what):
    if not reply or reply[-1] is None or not reply[-1].startswith(b"OK"):
        raise AssertionError("%s: %r" % (what, reply))


def wait_log(cluster, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in cluster.router_log():
            return
        time.sleep(0.1)
    raise AssertionError("router log lacks %r:\n%s"
                         % (text, cluster.router_log()[-3000:]))


def store(client, modseq):
    ok(client.command(b"APPLY RESERVE %(PARTITION default MBOXNAME "
                      b"(user.anne) GUID (" + GUID.encode() + b"))"),
       "reserve")
    ok(client.command(b"APPLY MESSAGE (%{default " + GUID.encode() + b" "
                      + str(len(BODY)).encode() + b"}\r\n" + BODY + b")"),
       "message")
    ok(client.command(mailbox(modseq)), "mailbox")


def main():
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("skipped: programs not built: %s" % binaries.missing())
        return 77
    with cairncluster.Cluster(binaries, nodes=2, replicas=1,
                              prefix="cairn-sighup-") as cluster:
        cluster.start()
        client = cairncluster.CsyncClient(cluster.csync_port)
        ok(client.login_plain("repluser", "replpass"), "login")
        store(client, 2)
        assert len(cluster.holders()["anne"]) == 1, cluster.holders()

        new_ring = os.path.join(cluster.dir, "new.ring")
        for args in (["create", new_ring, "-d", "main", "-r", "2",
                      "-n", "node1:1", "-n", "node2:1"],
                     ["set-weight", new_ring, "node1", "2", "--commit"],
                     ["set-weight", new_ring, "node1", "1", "--commit"]):
            r = cluster.cairnctl("ring", *args)
            assert r.returncode == 0, r.stdout + r.stderr
        os.rename(new_ring, cluster.ring_file)
        cluster.daemons["router"].signal(signal.SIGHUP)
        wait_log(cluster, "ring epoch 3 loaded")
        # The same connection: state from the old replica, then a write
        # that goes to both.
        reply = client.command(b"GET USER anne")
        ok(reply, "get user")
        assert any(line.startswith(b"* MAILBOX") for line in reply), reply
        store(client, 3)
        assert cluster.holders()["anne"] == ["node1", "node2"], \
            cluster.holders()

        with open(cluster.ring_file + ".tmp", "w") as f:
            f.write("not a ring\n")
        os.rename(cluster.ring_file + ".tmp", cluster.ring_file)
        cluster.daemons["router"].signal(signal.SIGHUP)
        wait_log(cluster, "ring in use kept")
        store(client, 4)
        client.close()
        assert cluster.daemons["router"].stop() == 0
    print("test_router_sighup: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
