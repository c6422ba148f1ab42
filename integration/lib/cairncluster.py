"""cairncluster -- a local cairn cluster for end-to-end tests.

Starts N `cairn-node` processes and one `cairn-router` from a generated
cluster.conf in a temp dir, every endpoint a free port of 127.0.0.1, one
csync channel with its own credentials (cyruslab's replication identity by
default, so a cyruslab Source's channel can point straight at it), and the
destination's ring made with `cairnctl ring create --from-config`.

Readiness is probed, never slept for: a node is ready when it has written
its bound endpoint (`-w FILE`) and its port accepts TCP; the router when
its channel port sends the csync banner's "* OK" line.  A Cluster stops
exactly the pids it started (SIGTERM, then SIGKILL), also on failure; a
watchdog process (labproc.Watchdog) stops them if the test process dies.
A failing `with Cluster()` block prints every daemon's log.

Binaries come from paths CMake passes (`--router`, `--node`, `--cairnctl`
on the test's command line, see binaries_from_argv()), else from
$CAIRN_BUILD_DIR.  Python 3 standard library only.

    with cairncluster.Cluster(paths, nodes=3, replicas=2) as cluster:
        cluster.start()
        source.set_channel("cairn", *cluster.csync_address)
        cluster.user_files()          # {node: {user: data file}}
        cluster.holders()             # {user: [nodes holding it]}
        cluster.stop_node("node2")    # SIGKILL by pid; start_node() again
"""
import argparse
import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

from labproc import Watchdog, free_port, kill_group

__all__ = ["Binaries", "Cluster", "ClusterError", "binaries_from_argv",
           "csync_banner"]

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class ClusterError(Exception):
    """The cluster did not start or a cairn program failed."""


class Binaries:
    """Paths of cairn-router, cairn-node and cairnctl."""

    def __init__(self, router, node, cairnctl):
        self.router, self.node, self.cairnctl = router, node, cairnctl

    def missing(self):
        """The paths that are not executable (empty when all are)."""
        return [p for p in (self.router, self.node, self.cairnctl)
                if not p or not os.access(p, os.X_OK)]


def binaries_from_argv(argv=None):
    """Binaries from `--router P --node P --cairnctl P` (CMake passes
    $<TARGET_FILE:...>), each defaulting to $CAIRN_BUILD_DIR's build tree.
    Returns (Binaries, remaining arguments)."""
    build = os.environ.get("CAIRN_BUILD_DIR", "")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--router",
                        default=os.path.join(build, "router", "cairn-router"))
    parser.add_argument("--node",
                        default=os.path.join(build, "node", "cairn-node"))
    parser.add_argument("--cairnctl",
                        default=os.path.join(build, "ops", "cairnctl"))
    args, rest = parser.parse_known_args(argv)
    return Binaries(args.router, args.node, args.cairnctl), rest


def csync_banner(port, timeout=2.0, host="127.0.0.1"):
    """The lines of the csync banner up to "* OK ..." (or up to EOF)."""
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        while not re.search(rb"^\* OK[^\n]*\n", data, re.M):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode("utf-8", "replace").splitlines()


class Daemon:
    """One started cairn program: its pid, log file and argv."""

    def __init__(self, name, argv, log_path):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.process = None

    def start(self):
        with open(self.log_path, "ab") as log:
            log.write(b"==== start %s\n" % " ".join(self.argv).encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self.process

    @property
    def pid(self):
        return self.process.pid if self.process else None

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def signal(self, signo):
        if self.running:
            os.kill(self.process.pid, signo)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (after SIGCONT, in case it was stopped), SIGKILL after
        timeout; returns the exit status (None if it was not started)."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                proc.wait()
        return proc.returncode

    def kill(self):
        """SIGKILL by pid (a crash); returns the exit status."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def log(self):
        if not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Cluster:
    """cairn-router + N cairn-node processes in a temp directory.

    nodes, replicas: the one destination "main"; channel: the csync
    channel's name, with sasl_user/sasl_password (cyruslab's replication
    identity by default) and sasl_mechanisms; limits: [limits] keys (e.g.
    {"max_literal": "4K"}); router/node_settings: extra keys of those
    sections; channel_settings: extra keys of the channel's section (e.g.
    {"compress": "no"}); destination_settings: extra keys of [destination
    main] (e.g. {"ack": "one"}); node_hosts: {node: address} for nodes
    that listen elsewhere than 127.0.0.1 (inside a network namespace the
    test made, labnet.py); node_wrappers: {node: argv prefix} the node runs
    under (e.g. ["ip", "netns", "exec", NS]); router_host/router_wrapper:
    the same for the router (csync listener, control socket); sections: {section: {key:
    value}} of further single sections (e.g. {"scrub": {"rate": "1M"}});
    security: further [security] keys (e.g. {"user": "cairn-test",
    "data_mode": "0640"}); sasl_password_file: the channel's password is
    written to this file and named by sasl_password_file instead of
    sasl_password. Without [security] user the daemons get
    --allow-root (they refuse to stay root otherwise; a no-op when the
    test is not root). Nothing runs until start()."""

    def __init__(self, binaries, nodes=3, replicas=2, channel="cairn",
                 sasl_user="repluser", sasl_password="replpass",
                 mechanisms="SCRAM-SHA-512 PLAIN", limits=None,
                 router_settings=None, node_settings=None, keep=None,
                 prefix="cairn-cluster-", channel_settings=None,
                 destination_settings=None, node_hosts=None,
                 node_wrappers=None, sections=None, security=None,
                 sasl_password_file=None, router_host="127.0.0.1",
                 router_wrapper=None):
        missing = binaries.missing()
        if missing:
            raise ClusterError("cairn programs not built: %s" % missing)
        if keep is None:
            keep = os.environ.get("CYRUSLAB_KEEP") == "1"
        self.binaries = binaries
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.config_path = os.path.join(self.dir, "cluster.conf")
        self.channel = channel
        self.sasl_user, self.sasl_password = sasl_user, sasl_password
        self.mechanisms = mechanisms
        self.replicas = replicas
        self.limits = dict(limits or {})
        self.router_settings = dict(router_settings or {})
        self.node_settings = dict(node_settings or {})
        self.channel_settings = dict(channel_settings or {})
        self.destination_settings = dict(destination_settings or {})
        self.node_hosts = dict(node_hosts or {})
        # the router's csync listener and control socket (a namespace's
        # address when router_wrapper runs it inside one, labnet.py)
        self.router_host = router_host
        self.per_node_settings = {}  # set_node_settings()
        self.sections = {k: dict(v) for k, v in (sections or {}).items()}
        self.security = dict(security or {})
        self.sasl_password_file = sasl_password_file
        root_flags = [] if self.security.get("user") else ["--allow-root"]
        wrappers = dict(node_wrappers or {})
        self.csync_port = free_port()
        self.control_port = free_port()
        self.node_names = ["node%d" % (i + 1) for i in range(nodes)]
        self.node_ports = {n: free_port() for n in self.node_names}
        self.ring_dir = os.path.join(self.dir, "rings")
        self.ring_file = os.path.join(self.ring_dir, "main.ring")
        self.daemons = {}
        self._watchdog = Watchdog(None)
        self._closed = False
        for name in self.node_names:
            os.makedirs(self.data_dir(name))
        os.makedirs(self.ring_dir)
        os.makedirs(os.path.join(self.dir, "spool"))
        self._write_config()
        for name in self.node_names:
            self.daemons[name] = Daemon(name, list(wrappers.get(name, [])) + [
                binaries.node, "-f", "-c", self.config_path, "-n", name,
                "-w", self._endpoint_file(name)] + root_flags,
                os.path.join(self.dir, name + ".log"))
        self.daemons["router"] = Daemon("router", list(
            router_wrapper or []) + [
            binaries.router, "-c", self.config_path] + root_flags,
            os.path.join(self.dir, "router.log"))

    # -- configuration ---------------------------------------------------
    def node_host(self, node):
        return self.node_hosts.get(node, "127.0.0.1")

    def rewrite_config(self, destination_settings=None):
        """Write cluster.conf again (e.g. another ack policy); the router
        reads it when restarted."""
        if destination_settings is not None:
            self.destination_settings.update(destination_settings)
        self._write_config()

    def set_node_settings(self, node, settings):
        """Extra keys of one node's section only (e.g. its own
        metrics_listen); writes cluster.conf again."""
        self.per_node_settings.setdefault(node, {}).update(settings)
        self._write_config()

    def data_dir(self, node):
        return os.path.join(self.dir, "data", node)

    def _endpoint_file(self, node):
        return os.path.join(self.dir, node + ".endpoint")

    @property
    def csync_address(self):
        return (self.router_host, self.csync_port)

    def _write_config(self):
        router = {
            "control": "tcp://%s:%d" % (self.router_host, self.control_port),
            "spool_dir": os.path.join(self.dir, "spool"),
            "servername": "cairn-e2e",
            "node_timeout": "5s",
            "log_level": "debug",
            "ring_dir": self.ring_dir,
        }
        router.update(self.router_settings)
        lines = ["# written by integration/lib/cairncluster.py", "[router]"]
        lines += ["%s = %s" % kv for kv in router.items()]
        lines += ["", "[channel %s]" % self.channel,
                  "listen = %s:%d" % (self.router_host, self.csync_port),
                  "sasl_user = %s" % self.sasl_user,
                  ("sasl_password_file = %s" % self.sasl_password_file
                   if self.sasl_password_file else
                   "sasl_password = %s" % self.sasl_password),
                  "sasl_mechanisms = %s" % self.mechanisms,
                  "destinations = main"]
        lines += ["%s = %s" % kv for kv in self.channel_settings.items()]
        lines += ["",
                  "[destination main]",
                  "nodes = %s" % ", ".join(self.node_names),
                  "replicas = %d" % self.replicas,
                  "ring_file = %s" % self.ring_file]
        lines += ["%s = %s" % kv for kv in self.destination_settings.items()]
        lines.append("")
        for name in self.node_names:
            node = {"endpoint": "tcp://%s:%d" % (self.node_host(name),
                                                 self.node_ports[name]),
                    "data_dir": self.data_dir(name),
                    "reserve": "1M", "log_level": "debug"}
            node.update(self.node_settings)
            node.update(self.per_node_settings.get(name, {}))
            lines.append("[node %s]" % name)
            lines += ["%s = %s" % kv for kv in node.items()]
            lines.append("")
        # CURVE on every ZeroMQ link, as by default; start() makes the
        # keys with `cairnctl keys create`.
        lines += ["[security]", "curve = yes",
                  "curve_key_dir = %s" % self.key_dir]
        lines += ["%s = %s" % kv for kv in self.security.items()]
        lines.append("")
        for section, keys in self.sections.items():
            lines.append("[%s]" % section)
            lines += ["%s = %s" % kv for kv in keys.items()]
            lines.append("")
        if self.limits:
            lines.append("[limits]")
            lines += ["%s = %s" % kv for kv in self.limits.items()]
        if self.sasl_password_file:
            with open(self.sasl_password_file, "w") as f:
                f.write(self.sasl_password + "\n")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.config_path, 0o600)  # it holds the channel password

    # -- lifecycle --------------------------------------------------------
    def start(self):
        """Check the config, make the ring, start every node and then the
        router; returns once all are ready (ClusterError otherwise)."""
        r = self.cairnctl("config", "check")
        if r.returncode != 0:
            raise ClusterError("config check failed:\n%s%s"
                               % (r.stdout, r.stderr))
        self.make_keys()
        if not os.path.exists(self.ring_file):
            r = self.cairnctl("ring", "create", self.ring_file,
                              "--from-config", "main")
            if r.returncode != 0:
                raise ClusterError("ring create failed:\n%s%s"
                                   % (r.stdout, r.stderr))
        for name in self.node_names:
            self.start_node(name)
        self.start_router()
        return self

    @property
    def key_dir(self):
        return os.path.join(self.dir, "keys")

    def make_keys(self):
        """CURVE keys of the router, cairnctl ("admin") and every node,
        made with `cairnctl keys create` (those that exist are kept)."""
        for name in ["router", "admin"] + list(self.node_names):
            if os.path.exists(os.path.join(self.key_dir, name + ".secret")):
                continue
            r = self.cairnctl("keys", "create", name)
            if r.returncode != 0:
                raise ClusterError("keys create %s failed:\n%s%s"
                                   % (name, r.stdout, r.stderr))

    def _track(self, daemon):
        self._watchdog.track(daemon.start().pid)

    def start_node(self, name):
        """Start (or restart, with its data) one node; wait until ready."""
        daemon = self.daemons[name]
        if daemon.running:
            return
        try:
            os.unlink(self._endpoint_file(name))
        except FileNotFoundError:
            pass
        self._track(daemon)
        self._wait(daemon, lambda: os.path.exists(self._endpoint_file(name))
                   and _tcp_accepts(self.node_ports[name],
                                    self.node_host(name)))

    def start_router(self):
        daemon = self.daemons["router"]
        if daemon.running:
            return
        self._track(daemon)
        self._wait(daemon, lambda: any(line.startswith("* OK") for line in
                                       _quiet_banner(self.csync_port,
                                                     self.router_host)))

    def _wait(self, daemon, ready):
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            if not daemon.running:
                raise ClusterError("%s exited during startup:\n%s"
                                   % (daemon.name, daemon.log()))
            if time.monotonic() > deadline:
                raise ClusterError("%s not ready after %.0fs:\n%s"
                                   % (daemon.name, READY_TIMEOUT,
                                      daemon.log()))
            time.sleep(0.05)

    def stop_node(self, name, how="kill"):
        """how: "kill" (SIGKILL, a crash), "term" (clean stop),
        "pause" (SIGSTOP: the node hangs), "resume" (SIGCONT).
        Returns the exit status for kill/term."""
        daemon = self.daemons[name]
        if how == "pause":
            daemon.signal(signal.SIGSTOP)
            return None
        if how == "resume":
            daemon.signal(signal.SIGCONT)
            return None
        return daemon.kill() if how == "kill" else daemon.stop()

    def stop(self):
        """Stop the router, then the nodes (SIGTERM): {name: exit status}
        of each one that was running."""
        statuses = {}
        for name in ["router"] + self.node_names:
            status = self.daemons[name].stop()
            if status is not None:
                statuses[name] = status
        return statuses

    def close(self, failed=False):
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
            self._watchdog.release()
        finally:
            if failed:
                sys.stderr.write(self.logs() + "\n")
            if self.keep or failed and os.environ.get("CYRUSLAB_KEEP_FAILED"):
                sys.stderr.write("cairncluster: kept %s\n" % self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)
        return False

    # -- looking at it ----------------------------------------------------
    def logs(self, tail=200):
        """The last `tail` lines of every daemon's log."""
        parts = []
        for name, daemon in self.daemons.items():
            lines = daemon.log().splitlines()[-tail:]
            parts.append("===== cairn %s (%s) =====\n%s"
                         % (name, daemon.log_path, "\n".join(lines)))
        return "\n".join(parts)

    def router_log(self):
        return self.daemons["router"].log()

    def wait_router_log(self, pattern, offset=0, timeout=120.0):
        """Wait until the router's log after `offset` (bytes of text)
        matches the regex; returns the match (ClusterError on timeout, a
        bound for a broken build only: the line is the event waited for)."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.router_log()[offset:], re.M)
            if m:
                return m
            if time.monotonic() > deadline:
                raise ClusterError("router log never matched %r:\n%s"
                                   % (pattern, self.router_log()[offset:]
                                      [-3000:]))
            time.sleep(0.05)

    def router_node_state(self, name):
        """The router's view of node name ("up", "slow", "down") from
        `cairnctl status --json`, None when the router does not say."""
        r = self.cairnctl("status", "--json", "-t", "2s")
        try:
            data = json.loads(r.stdout)
        except ValueError:
            return None
        for destination in data.get("router", {}).get("destinations", []):
            for node in destination.get("nodes", []):
                if node.get("name") == name:
                    return node.get("state")
        return None

    def wait_node_up(self, name, offset, timeout=180.0):
        """Wait until the router holds node name up: its "node NAME is up"
        line after offset, or its view says up (a node restarted before
        the router ever saw it down).  A node that was down (killed, cut
        off) is asked again only once the router's probe found it back."""
        pattern = r"node %s is up \(was down\)" % re.escape(name)
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.router_log()[offset:]):
            if self.router_node_state(name) == "up":
                return
            if time.monotonic() > deadline:
                raise ClusterError("router never held %s up again:\n%s"
                                   % (name, self.router_log()[offset:]
                                      [-3000:]))
            time.sleep(0.2)

    def cairnctl(self, *args, timeout=60):
        """`cairnctl -c cluster.conf ARGS`: a CompletedProcess (text)."""
        return subprocess.run([self.binaries.cairnctl, "-c", self.config_path]
                              + [str(a) for a in args], capture_output=True,
                              text=True, timeout=timeout)

    def ring_replicas(self, users):
        """{user: [node names in ring order]} by the destination's ring:
        `cairnctl ring diff` against a ring of other node names lists
        every user as moving, with its current nodes."""
        other = os.path.join(self.dir, "other.ring")
        if not os.path.exists(other):
            specs = []
            for i in range(len(self.node_names)):
                specs += ["-n", "elsewhere%d:100" % (i + 1)]
            r = self.cairnctl("ring", "create", other, "-d", "main", "-r",
                              self.replicas, *specs)
            if r.returncode != 0:
                raise ClusterError("ring create: %s%s" % (r.stdout, r.stderr))
        users_file = os.path.join(self.dir, "users.list")
        with open(users_file, "w") as f:
            f.write("".join("%s\n" % u for u in users))
        r = self.cairnctl("ring", "diff", self.ring_file, other, "-u",
                          users_file, "-l")
        placement = {}
        for line in r.stdout.splitlines():
            m = re.match(r"^\s*(\S+)\s+(\S+)\s+->\s+(\S+)\s*$", line)
            if m and m.group(1) in users:
                placement[m.group(1)] = m.group(2).split(",")
        if sorted(placement) != sorted(users):
            raise ClusterError("ring diff did not list every user:\n%s%s"
                               % (r.stdout, r.stderr))
        return placement

    def user_files(self):
        """{node: {user: data file}} from each node's catalog.db (read
        only; the index is the data file + ".index")."""
        found = {}
        for name in self.node_names:
            catalog = os.path.join(self.data_dir(name), "catalog.db")
            found[name] = {}
            if not os.path.exists(catalog):
                continue
            db = sqlite3.connect("file:%s?mode=ro" % catalog, uri=True,
                                 timeout=10)
            try:
                columns = [row[1] for row in
                           db.execute("PRAGMA table_info(users)")]
                path_column = next(c for c in columns if c != "userid")
                for user, path in db.execute(
                        "SELECT userid, %s FROM users" % path_column):
                    found[name][user] = path
            finally:
                db.close()
        return found

    def holders(self):
        """{user: sorted [nodes whose catalog holds it]}."""
        result = {}
        for node, users in self.user_files().items():
            for user in users:
                result.setdefault(user, []).append(node)
        return {u: sorted(n) for u, n in result.items()}

    def data_bytes(self, users=None):
        """Total bytes of data files + indexes over all nodes (of the
        given users, or all), and per node."""
        per_node = {}
        for node, files in self.user_files().items():
            total = 0
            for user, path in files.items():
                if users is not None and user not in users:
                    continue
                for p in (path, path + ".index"):
                    if os.path.exists(p):
                        total += os.path.getsize(p)
            per_node[node] = total
        return sum(per_node.values()), per_node

    def data_file_bytes(self):
        """{(node, user): size of the data file} (logs only, no index)."""
        return {(node, user): os.path.getsize(path)
                for node, files in self.user_files().items()
                for user, path in files.items() if os.path.exists(path)}


def _tcp_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _quiet_banner(port, host="127.0.0.1"):
    try:
        return csync_banner(port, timeout=1.0, host=host)
    except OSError:
        return []


# ------------------------------------------------- reading backup files
# Both cairn's and backupd's files are Cyrus's format: the comparisons read
# the SQLite index directly (Cyrus's schema, every column) and the bodies
# from the gzip data file.

MAILBOX_COLUMNS = ("mboxname", "mboxtype", "last_uid", "highestmodseq",
                   "recentuid", "recenttime", "last_appenddate",
                   "pop3_last_login", "pop3_show_after", "uidvalidity",
                   "partition", "acl", "options", "sync_crc",
                   "sync_crc_annot", "xconvmodseq", "annotations")
RECORD_COLUMNS = ("uid", "modseq", "last_updated", "flags", "internaldate",
                  "annotations")


def index_state(data_file):
    """What a backup's index says, without row ids or chunk ids: {
    "mailboxes": {uniqueid: {column: value, "deleted": bool, "records":
    [{"guid", "expunged": bool, column: value}] by uid}}, "messages":
    {guid: size}, "seen": {uniqueid: {...}}, "subscriptions": {mboxname:
    unsubscribed?}, "sieve": {filename: [(guid, last_update, deleted?)]}}."""
    db = sqlite3.connect("file:%s?mode=ro" % (data_file + ".index"),
                         uri=True, timeout=10)
    try:
        state = {"mailboxes": {}, "messages": {}, "seen": {},
                 "subscriptions": {}, "sieve": {}}
        ids = {}
        for row in db.execute("SELECT id, uniqueid, deleted, %s FROM mailbox"
                              % ", ".join(MAILBOX_COLUMNS)):
            box = dict(zip(MAILBOX_COLUMNS, row[3:]))
            box["deleted"] = row[2] is not None
            box["records"] = []
            state["mailboxes"][row[1]] = box
            ids[row[0]] = box
        for row in db.execute(
                "SELECT r.mailbox_id, m.guid, r.expunged, %s FROM "
                "mailbox_message r JOIN message m ON m.id = r.message_id"
                % ", ".join("r." + c for c in RECORD_COLUMNS)):
            record = dict(zip(RECORD_COLUMNS, row[3:]))
            record.update(guid=row[1], expunged=row[2] is not None)
            ids[row[0]]["records"].append(record)
        for box in ids.values():
            box["records"].sort(key=lambda r: (r["uid"], r["guid"]))
        for guid, size in db.execute("SELECT guid, size FROM message"):
            state["messages"][guid] = size
        for row in db.execute("SELECT uniqueid, lastread, lastuid, "
                              "lastchange, seenuids FROM seen"):
            state["seen"][row[0]] = row[1:]
        for name, unsubscribed in db.execute(
                "SELECT mboxname, unsubscribed FROM subscription"):
            state["subscriptions"][name] = unsubscribed is not None
        for name, guid, updated, deleted in db.execute(
                "SELECT filename, guid, last_update, deleted FROM sieve "
                "ORDER BY id"):
            state["sieve"].setdefault(name, []).append(
                (guid, updated, deleted is not None))
        return state
    finally:
        db.close()


def index_differences(want, got, path=""):
    """Human-readable differences between two index_state() values (or
    parts of them); [] when equal."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got), key=str):
            where = "%s/%s" % (path, key)
            if key not in got:
                out.append("%s: missing (want %r)" % (where, want[key]))
            elif key not in want:
                out.append("%s: unexpected %r" % (where, got[key]))
            else:
                out += index_differences(want[key], got[key], where)
        return out
    return [] if want == got else ["%s: want %r, got %r" % (path, want, got)]


# Every column of the tables a user's facts live in, by natural keys:
# never row ids, chunk ids or offsets (they follow each node's own chunks).
INDEX_ROWS_SQL = {
    "mailbox": "SELECT uniqueid, mboxname, mboxtype, last_uid, highestmodseq,"
               " recentuid, recenttime, last_appenddate, pop3_last_login,"
               " pop3_show_after, uidvalidity, partition, acl, options,"
               " sync_crc, sync_crc_annot, quotaroot, xconvmodseq,"
               " annotations, deleted FROM mailbox",
    "record": "SELECT b.uniqueid, r.uid, m.guid, r.modseq, r.last_updated,"
              " r.flags, r.internaldate, r.annotations, r.expunged FROM"
              " mailbox_message r JOIN mailbox b ON b.id = r.mailbox_id"
              " JOIN message m ON m.id = r.message_id",
    "message": "SELECT guid, partition, size FROM message",
    "subscription": "SELECT mboxname, unsubscribed FROM subscription",
    "seen": "SELECT uniqueid, lastread, lastuid, lastchange, seenuids"
            " FROM seen",
    "sieve": "SELECT filename, guid, last_update, deleted FROM sieve",
}


def index_rows(data_file):
    """{table: sorted [row tuple]} of a backup's index (INDEX_ROWS_SQL):
    two replicas that took the same updates give equal values, times
    (expunged, deleted, unsubscribed) included."""
    db = sqlite3.connect("file:%s?mode=ro" % (data_file + ".index"),
                         uri=True, timeout=10)
    try:
        return {table: sorted(db.execute(sql).fetchall(),
                              key=lambda row: [str(v) for v in row])
                for table, sql in INDEX_ROWS_SQL.items()}
    finally:
        db.close()


def index_row_differences(one, other):
    """Rows of index_rows() one lacks or has over other, column by column
    for rows whose first column matches: [] when equal."""
    out = []
    for table in INDEX_ROWS_SQL:
        a, b = one[table], other[table]
        if a == b:
            continue
        extra = [r for r in a if r not in b]
        lacking = [r for r in b if r not in a]
        out.append("%s: %d rows differ: %r | %r"
                   % (table, len(extra) + len(lacking), extra[:3],
                      lacking[:3]))
    return out


FILE_LITERAL = re.compile(rb"%\{(\S+) ([0-9a-f]{40}) (\d+)\}\r\n")


def message_bodies(data_file):
    """{guid: body bytes} of every FILE literal in a data file's APPLY
    MESSAGE lines (all gzip members).  Raises ClusterError when a body's
    SHA-1 is not its GUID."""
    with gzip.open(data_file, "rb") as f:
        data = f.read()
    bodies = {}
    position = 0
    while True:
        m = FILE_LITERAL.search(data, position)
        if not m:
            break
        size = int(m.group(3))
        body = data[m.end():m.end() + size]
        guid = m.group(2).decode()
        if hashlib.sha1(body).hexdigest() != guid:
            raise ClusterError("%s: body of %s does not match its GUID"
                               % (data_file, guid))
        bodies[guid] = body
        position = m.end() + size
    return bodies


class CsyncClient:
    """A raw csync client for bad-input tests: send bytes, read the reply
    up to its OK/NO/BAD completion line (or the connection's end)."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.pending = b""
        self.banner = self.read_until(lambda line: line.startswith(b"* OK"))

    def read_line(self):
        """One line without CRLF; None at the connection's end."""
        while b"\n" not in self.pending:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.rstrip(b"\r")

    def read_until(self, last):
        lines = []
        while True:
            line = self.read_line()
            if line is None:
                return lines + [None]
            lines.append(line)
            if last(line):
                return lines

    def command(self, raw):
        """Send raw (bytes; CRLF added if missing) and return the reply's
        lines, the last one being the completion (None: closed)."""
        if not raw.endswith(b"\n"):
            raw += b"\r\n"
        self.sock.sendall(raw)
        return self.read_until(lambda line: line.split(b" ")[0] in (
            b"OK", b"NO", b"BAD", b"+", b"BYE") or line.startswith(b"* BYE"))

    def login_plain(self, user, password):
        token = base64.b64encode(b"\0" + user.encode() + b"\0" +
                                 password.encode())
        return self.command(b"AUTHENTICATE PLAIN " + token)

    def closed(self, wait=0.5):
        """True when the server has closed the connection (nothing else
        may be pending)."""
        try:
            self.sock.settimeout(wait)
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def snapshot_from_index(state):
    """An index_state() in the shape of cyruslab's Instance.snapshot(),
    for its live user mailboxes: {mboxname: {"uniqueid", "uidvalidity",
    "uidnext" (LAST_UID + 1), "highestmodseq", "messages": [{"uid",
    "guid", "flags"}] of the unexpunged records}}."""
    result = {}
    for uniqueid, box in state["mailboxes"].items():
        if box["deleted"] or box["mboxname"].startswith("DELETED."):
            continue
        messages = [{"uid": r["uid"], "guid": r["guid"],
                     "flags": sorted(r["flags"].strip("()").split())}
                    for r in box["records"] if not r["expunged"]]
        result[box["mboxname"]] = {
            "uniqueid": uniqueid, "uidvalidity": box["uidvalidity"],
            "uidnext": box["last_uid"] + 1,
            "highestmodseq": box["highestmodseq"], "messages": messages}
    return result


def comparable_snapshot(snapshot):
    """A cyruslab snapshot without message sizes (the index has none per
    record), to compare with snapshot_from_index()."""
    return {name: dict(box, messages=[{k: m[k] for k in ("uid", "guid",
                                                         "flags")}
                                      for m in box["messages"]])
            for name, box in snapshot.items()}
