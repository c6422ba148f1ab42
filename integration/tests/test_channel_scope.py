#!/usr/bin/env python3
"""A channel confined to its users (issue 10): a cluster whose channel
says `users = *@a.example` (CURVE on, as cairncluster writes it).  A raw
csync client logs in and asks for bob@b.example: GET USER, GET
MAILBOXES, APPLY MAILBOX, APPLY SUB - each is answered NO "user not
allowed on this channel", the router logs and counts the refusals, and
no node holds anything of bob's.  alice@a.example's GET USER goes
through to the nodes (answered by them: she has no backup yet).

usage: test_channel_scope.py [--router P] [--node P] [--cairnctl P]
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402

REFUSAL = b"user not allowed on this channel"
MAILBOX = (b"APPLY MAILBOX %(UNIQUEID 5f1d0c7a-bob MBOXNAME "
           b"b.example!user.bob LAST_UID 0 HIGHESTMODSEQ 1 RECENTUID 0 "
           b"RECENTTIME 0 LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 "
           b"POP3_SHOW_AFTER 0 UIDVALIDITY 1 PARTITION default "
           b"ACL \"bob@b.example\tlrswipkxtecdan\t\" OPTIONS P "
           b"SYNC_CRC 0 SYNC_CRC_ANNOT 0 RECORD ())")


def main():
    binaries, _ = cairncluster.binaries_from_argv()
    cluster = cairncluster.Cluster(
        binaries, nodes=2, replicas=2,
        channel_settings={"users": "*@a.example"}, mechanisms="PLAIN")
    failed = True
    try:
        cluster.start()
        client = cairncluster.CsyncClient(cluster.csync_port)
        reply = client.login_plain(cluster.sasl_user, cluster.sasl_password)
        assert reply[-1].startswith(b"OK"), reply
        for command in (b"GET USER bob@b.example",
                        b"GET MAILBOXES (b.example!user.bob)",
                        MAILBOX,
                        b"APPLY SUB %(USERID bob@b.example "
                        b"MBOXNAME b.example!user.bob.Sent)"):
            reply = client.command(command)
            print("%s -> %s" % (command[:40].decode(), reply[-1].decode()))
            assert reply[-1].startswith(b"NO") and REFUSAL in reply[-1], reply
        reply = client.command(b"GET USER alice@a.example")
        print("GET USER alice@a.example -> %s" % reply[-1].decode())
        assert REFUSAL not in reply[-1], reply
        reply = client.command(b"NOOP")
        assert reply[-1].startswith(b"OK"), reply
        client.close()
        held = cluster.user_files()
        for node, users in held.items():
            assert not any("bob" in user for user in users), (node, users)
        log = cluster.router_log()
        assert log.count("outside the channel's users") == 4, log[-2000:]
        assert "4 refused so far" in log
        print("PASS: bob@b.example refused 4 times, nothing stored")
        failed = False
    finally:
        cluster.close(failed=failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
