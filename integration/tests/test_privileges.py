#!/usr/bin/env python3
"""Least privilege (issue 10 part 5), with real programs started as root.

 1. Refusal: cairn-node and cairn-router started as root with no
    [security] user and no --allow-root exit 78 with "refusing to run as
    root without [security] user (set user, or pass --allow-root)"; with
    --allow-root the node runs. Started as another (non-root) account
    than [security] user, the node refuses too.
 2. The switch: a throwaway system user (useradd --system, removed at the
    end) is [security] user, data_mode = 0640; a router and 2 nodes start
    as root and switch to it. The channel's password comes from
    sasl_password_file, left 0644: the router warns once, naming the
    file; a node's CURVE secret key left 0644 is warned about the same
    way. A real Cyrus sync_client backs 3 users up through the router.
    /proc/PID/status of every daemon: real, effective, saved and
    filesystem uid and gid are the user's. Every file and directory
    under the nodes' data dirs, the router's spool and state dirs is
    owned by the user with mode 0640 (directories 0750); secret keys are
    0600.
 3. node2 is killed and alice gets new mail: the router (ack = one) marks
    node2 for repair and saves the mark in its state_dir at shutdown.
    SIGHUP reads the password file again: the new password logs in, the
    old one no longer does. The walk of step 2 runs after the stop.

usage: test_privileges.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402

STARTED = time.monotonic()
USERS = ["alice", "bob", "carol"]
REFUSAL = ("refusing to run as root without [security] user (set user, "
           "or pass --allow-root)")
DATA_MODE, DIR_MODE = 0o640, 0o750


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


def make_user():
    """A throwaway system user (and its group); its name."""
    name = "cairn-priv-%d" % os.getpid()
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    return name


def remove_user(name):
    subprocess.run(["userdel", name], check=False)
    subprocess.run(["groupdel", name], check=False, capture_output=True)


def refusals(binaries, user):
    """Step 1, on a one-node configuration of its own (CURVE off)."""
    work = tempfile.mkdtemp(prefix="cairn-priv-refuse-")
    os.chmod(work, 0o755)
    conf = os.path.join(work, "cluster.conf")
    port = cairncluster.free_port()

    def write(extra):
        with open(conf, "w") as f:
            f.write("[router]\nspool_dir = %s/spool\nstate_dir = %s/state\n"
                    "[channel b]\nlisten = 127.0.0.1:%d\nsasl_user = u\n"
                    "sasl_password = p\ndestinations = main\n"
                    "[destination main]\nnodes = node1\nreplicas = 1\n"
                    "[node node1]\nendpoint = tcp://127.0.0.1:%d\n"
                    "data_dir = %s/data\n[security]\ncurve = no\n%s"
                    % (work, work, cairncluster.free_port(), port, work,
                       extra))
        os.chmod(conf, 0o644)

    try:
        write("")
        for name, argv in (("cairn-node", [binaries.node, "-f", "-c", conf,
                                           "-n", "node1"]),
                           ("cairn-router", [binaries.router, "-c", conf])):
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=30)
            expect(r.returncode == 78 and REFUSAL in r.stderr,
                   "%s as root without [security] user or --allow-root: "
                   "refused (exit %d: %s)" % (name, r.returncode,
                                              r.stderr.strip()),
                   r.stdout + r.stderr)
        expect(not os.path.exists(os.path.join(work, "data")),
               "the refused node created nothing (no data dir)")
        ready = os.path.join(work, "node1.ready")
        node = subprocess.Popen([binaries.node, "-f", "-c", conf, "-n",
                                 "node1", "-w", ready, "--allow-root"],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(ready) and node.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        running = node.poll() is None and os.path.exists(ready)
        node.send_signal(signal.SIGTERM)
        out = node.communicate(timeout=30)[0]
        expect(running and node.returncode == 0,
               "cairn-node --allow-root as root: runs (ready, then exit 0 "
               "on SIGTERM)", out)
        # not root, [security] user another account: refused
        write("user = root\n")
        entry = pwd.getpwnam(user)
        r = subprocess.run(["setpriv", "--reuid=%d" % entry.pw_uid,
                            "--regid=%d" % entry.pw_gid, "--clear-groups",
                            binaries.node, "-f", "-c", conf, "-n", "node1"],
                           capture_output=True, text=True, timeout=30)
        expect(r.returncode == 78 and "[security] user is root but this "
               "process is not root and runs as another user" in r.stderr,
               "cairn-node as %s with [security] user = root: refused (%s)"
               % (user, r.stderr.strip()), r.stdout + r.stderr)
    finally:
        subprocess.run(["rm", "-rf", work], check=False)


def ids_of(pid):
    """(uids, gids, groups) from /proc/PID/status: real, effective, saved,
    filesystem."""
    uids = gids = groups = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                uids = [int(x) for x in line.split()[1:]]
            elif line.startswith("Gid:"):
                gids = [int(x) for x in line.split()[1:]]
            elif line.startswith("Groups:"):
                groups = [int(x) for x in line.split()[1:]]
    return uids, gids, groups


def walk(top):
    """Every path under top (top included)."""
    yield top
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            yield os.path.join(root, name)


def check_tree(tops, uid, gid):
    """Owner and mode of everything under tops: [(path, problem)], and
    how many files and directories were looked at."""
    problems, files, dirs = [], 0, 0
    for top in tops:
        for path in walk(top):
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            want = DIR_MODE if stat.S_ISDIR(info.st_mode) else DATA_MODE
            if stat.S_ISDIR(info.st_mode):
                dirs += 1
            else:
                files += 1
            if info.st_uid != uid or info.st_gid != gid or mode != want:
                problems.append("%s: uid %d gid %d mode %04o (want %d %d "
                                "%04o)" % (path, info.st_uid, info.st_gid,
                                           mode, uid, gid, want))
    return problems, files, dirs


def switched(cluster, source, user):
    """Steps 2 and 3."""
    entry = pwd.getpwnam(user)
    uid, gid = entry.pw_uid, entry.pw_gid
    log = cluster.router_log()
    expect("channel %s: %s holds a password and its group or others may "
           "read or write it (mode 0644)" % (cluster.channel,
                                             cluster.sasl_password_file)
           in log and log.count(cluster.sasl_password_file) == 1,
           "router warns once about the 0644 password file, naming it")
    node2_log = cluster.daemons["node2"].log()
    secret = os.path.join(cluster.key_dir, "node2.secret")
    expect("%s holds a secret key and its group or others may read or "
           "write it (mode 0644)" % secret in node2_log,
           "node2 warns about its 0644 CURVE secret key, naming it",
           node2_log[-2000:])
    os.chmod(secret, 0o600)
    for name in ["router"] + cluster.node_names:
        daemon = cluster.daemons[name]
        uids, gids, groups = ids_of(daemon.pid)
        expect(uids == [uid] * 4 and gids == [gid] * 4 and
               not set(groups) - {gid},
               "%s (pid %d) runs as %s: real/effective/saved/fs uid %s, gid "
               "%s, groups %s" % (name, daemon.pid, user, uids, gids, groups))
        expect("running as %s (uid %d, gid %d)" % (user, uid, gid)
               in daemon.log(), "%s logs the switch" % name)

    r = source.sync_client(users=USERS, channel="cairn")
    expect(r.returncode == 0, "sync_client -u %s through the router "
           "(daemons running as %s)" % (" ".join(USERS), user),
           r.stdout + r.stderr)
    holders = cluster.holders()
    expect(all(len(holders.get(u, [])) == 2 for u in USERS),
           "every user is on both nodes", repr(holders))
    r = cluster.cairnctl("verify", "-q", "-r", cluster.ring_file, *USERS)
    expect(r.returncode == 0, "cairnctl verify: replicas ok and agree",
           r.stdout + r.stderr)
    # node2 dies; alice's new mail (ack = one) leaves a repair mark, which
    # the router writes into its state_dir at shutdown, as the user.
    cluster.stop_node("node2", "kill")
    offset = len(cluster.router_log())
    source.deliver("alice", cyruslab.make_message("alice", 90))
    r = source.sync_client(users=["alice"], channel="cairn")
    expect(r.returncode == 0, "with node2 down, alice's new mail is backed "
           "up on node1 (ack = one)", r.stdout + r.stderr)
    cluster.wait_router_log("user alice on node node2 needs repair", offset,
                            timeout=60)

    # SIGHUP: the password file is read again (as the user: it and the
    # configuration are readable by the user's group, 0640 root:GROUP).
    os.chown(cluster.config_path, 0, gid)
    os.chmod(cluster.config_path, 0o640)
    with open(cluster.sasl_password_file, "w") as f:
        f.write("changed-password\n")
    os.chown(cluster.sasl_password_file, 0, gid)
    os.chmod(cluster.sasl_password_file, 0o640)
    offset = len(cluster.router_log())
    cluster.daemons["router"].signal(signal.SIGHUP)
    cluster.wait_router_log("SIGHUP: configuration reloaded", offset,
                            timeout=30)
    reloaded = cluster.router_log()[offset:]
    expect("may read or write it (mode 0640)" in reloaded,
           "SIGHUP: the 0640 password file is warned about again, by name")
    old = cairncluster.CsyncClient(cluster.csync_port)
    reply = old.login_plain(cluster.sasl_user, cluster.sasl_password)
    old.close()
    new = cairncluster.CsyncClient(cluster.csync_port)
    reply_new = new.login_plain(cluster.sasl_user, "changed-password")
    new.close()
    expect(not reply[-1].startswith(b"OK") and
           reply_new[-1].startswith(b"OK"),
           "after SIGHUP the file's new password logs in (%s), the old one "
           "does not (%s)" % (reply_new[-1].decode(), reply[-1].decode()))

    # repair marks and the spool are written at shutdown / while running
    statuses = cluster.stop()
    expect(all(s == 0 for s in statuses.values()),
           "router and nodes stop cleanly as %s" % user, repr(statuses))
    state_dir = os.path.join(cluster.dir, "cairn-data", "router")
    expect(os.listdir(state_dir), "the router saved its repair marks in "
           "%s: %s" % (state_dir, os.listdir(state_dir)))
    tops = [cluster.data_dir(n) for n in cluster.node_names]
    tops += [os.path.join(cluster.dir, "spool"), state_dir]
    problems, files, dirs = check_tree(tops, uid, gid)
    expect(not problems, "%d files (0640) and %d directories (0750) under "
           "the data, spool and state dirs: all owned by %s"
           % (files, dirs, user), "\n".join(problems[:40]))
    for name in os.listdir(cluster.key_dir):
        if name.endswith(".secret"):
            mode = stat.S_IMODE(os.stat(os.path.join(cluster.key_dir,
                                                     name)).st_mode)
            expect(mode == 0o600, "key %s is 0600" % name, "%04o" % mode)
    print("# walk: %d files, %d directories, owner %s, modes 0640/0750"
          % (files, dirs, user))


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    user = make_user()
    try:
        refusals(binaries, user)
        with cairncluster.Cluster(
                binaries, nodes=2, replicas=2, prefix="cairn-priv-",
                security={"user": user, "data_mode": "0640"},
                destination_settings={"ack": "one"},
                sasl_password_file=None) as cluster, \
                cyruslab.Lab() as lab:
            # The daemons, as the user, must reach their directories.
            os.chmod(cluster.dir, 0o755)
            cluster.sasl_password_file = os.path.join(cluster.dir,
                                                      "channel.password")
            cluster.rewrite_config()
            os.chmod(cluster.sasl_password_file, 0o644)
            cluster.make_keys()
            os.chmod(os.path.join(cluster.key_dir, "node2.secret"), 0o644)
            cluster.start()
            source = lab.add_source(channels={"cairn":
                                              cluster.csync_address})
            lab.start()
            cyruslab.populate(source, USERS, messages=4)
            switched(cluster, source, user)
    finally:
        remove_user(user)
    print("PASS (%.1fs)" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
