"""cyruslab -- stand up real Cyrus IMAP 3.6 servers for cairn's tests.

Python 3 standard library only; must run as root (Cyrus's `master` binds
as root and drops to the `cyrus` user, the CLI tools switch user
themselves).  Everything lives in one fresh temporary directory and listens
on free ports of 127.0.0.1.  A Lab owns every process it starts and stops
exactly those (by pid and process group) when it is closed, also after an
exception; its logs are printed when a `with Lab()` block fails.

Cyrus logs only through syslog(3), which always writes to /dev/log.  Rather
than touch the machine's /dev/log, every Cyrus process runs with a private
/dev whose /dev/log is the instance's own socket (labproc.py), and the lab
writes what arrives to <instance>/syslog.log.

Typical use (see integration/README.md):

    with cyruslab.Lab() as lab:
        backup = lab.add_backup()
        source = lab.add_source(channels={"backup": backup.csync_address})
        lab.start()
        source.deliver("alice", cyruslab.make_message("alice", 1))
        r = source.sync_client(users=["alice"], channel="backup")
        assert r.returncode == 0, r
        print(backup.ctl_backups("verify", "-A").stdout)
"""

import atexit
import grp
import imaplib
import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

from labmail import (LabError, ManageSieve, check_ok, list_name,
                     mailbox_state, make_message, populate)
from labproc import (TIMED_OUT, SyslogSink, ToolResult, Watchdog,
                     free_port, run_logged, spawn, stop_process,
                     with_private_devlog)

# The public API (with what it re-exports from labmail and labproc).
__all__ = [
    "ADMIN_PASSWORD", "ADMIN_USER", "Backup", "CYRUS_BIN", "Instance", "Lab",
    "LabError", "ManageSieve", "REPLICATION_PASSWORD", "REPLICATION_USER",
    "Replica", "RollingSync", "SKIP_EXIT_CODE", "Source", "TIMED_OUT",
    "ToolResult", "check_ok", "chown_cyrus", "free_port", "list_name",
    "mailbox_state", "make_message", "missing_prerequisites", "populate",
    "run_logged", "skip_unless_runnable",
]

CYRUS_BIN = os.environ.get("CYRUS_BIN", "/usr/lib/cyrus/bin")
SASLPASSWD2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
REQUIRED_TOOLS = ("master", "imapd", "lmtpd", "timsieved", "backupd",
                  "sync_server", "sync_client", "ctl_backups", "cyr_backup",
                  "restore", "cyr_dbtool", "ctl_cyrusdb")

# Lab-only credentials: 'admin' is the IMAP admin used for proxy logins,
# 'repluser' the replication identity.  Both are in `admins` everywhere.
ADMIN_USER, ADMIN_PASSWORD = "admin", "adminpw"
REPLICATION_USER, REPLICATION_PASSWORD = "repluser", "replpass"

SKIP_EXIT_CODE = 77  # what the ctest scripts return when they cannot run
READY_TIMEOUT = 30.0


def missing_prerequisites():
    """Why this machine cannot run a lab, or None if it can."""
    if os.geteuid() != 0:
        return "not root (Cyrus's master must start as root)"
    missing = [t for t in REQUIRED_TOOLS
               if not os.access(os.path.join(CYRUS_BIN, t), os.X_OK)]
    if missing:
        return "Cyrus tools missing in %s: %s" % (CYRUS_BIN, " ".join(missing))
    if not os.access(SASLPASSWD2, os.X_OK):
        return "saslpasswd2 missing (Debian package sasl2-bin)"
    try:
        pwd.getpwnam("cyrus")
        grp.getgrnam("mail")
    except KeyError:
        return "no 'cyrus' user or 'mail' group (Debian package cyrus-common)"
    return None


def skip_unless_runnable():
    """Exit with SKIP_EXIT_CODE, saying why, when a lab cannot run here."""
    reason = missing_prerequisites()
    if reason:
        print("SKIP: %s" % reason)
        sys.exit(SKIP_EXIT_CODE)


def chown_cyrus(path):
    """Give path (recursively) to cyrus:mail, as every Cyrus file must be."""
    uid, gid = pwd.getpwnam("cyrus").pw_uid, grp.getgrnam("mail").gr_gid
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


# ------------------------------------------------------------- instances

class Instance:
    """One Cyrus server: its directory, configs, ports and `master`."""

    kind = "generic"

    def __init__(self, lab, name, extra_config=None):
        self.lab = lab
        self.name = name
        self.dir = os.path.join(lab.dir, name)
        self.config_path = os.path.join(self.dir, "imapd.conf")
        self.cyrus_conf_path = os.path.join(self.dir, "cyrus.conf")
        self.servername = "%s.cyruslab" % name
        self.syslog_socket = os.path.join(self.dir, "syslog.sock")
        self.syslog_path = os.path.join(self.dir, "syslog.log")
        self.extra_config = dict(extra_config or {})
        self.ports = {}
        self.process = None
        self.tools_only = False
        self._prepared = False
        for sub in ("conf/db", "conf/log", "conf/msg", "conf/proc",
                    "conf/quota", "conf/socket", "conf/sync", "conf/user",
                    "conf/lock", "spool", "tmp", "run/proc", "run/lock",
                    "sieve", "dev", "tools"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)

    # -- configuration ---------------------------------------------------
    def config(self):
        """imapd.conf settings, in order (subclasses add theirs)."""
        d = self.dir
        conf = {
            "configdirectory": d + "/conf",
            "defaultpartition": "default",
            "partition-default": d + "/spool",
            "temp_path": d + "/tmp",
            "proc_path": d + "/run/proc",
            "mboxname_lockpath": d + "/run/lock",
            "lmtpsocket": d + "/run/lmtp",
            "idlesocket": d + "/run/idle",
            "notifysocket": d + "/run/notify",
            "sievedir": d + "/sieve",
            "sieveusehomedir": "false",
            "servername": self.servername,
            "syslog_prefix": "lab-" + self.name,
            "hashimapspool": "true",
            "admins": "%s %s" % (ADMIN_USER, REPLICATION_USER),
            "allowplaintext": "yes",
            "sasl_pwcheck_method": "auxprop",
            "sasl_auxprop_plugin": "sasldb",
            "sasl_sasldb_path": d + "/sasldb2",
        }
        conf.update(self.lab.namespace_config())
        return conf

    def services(self):
        """cyrus.conf SERVICES lines: name -> (command, listen)."""
        return {}

    def write_configs(self):
        conf = self.config()
        conf.update(self.extra_config)
        with open(self.config_path, "w") as f:
            f.write("# %s instance, written by integration/lib/cyruslab.py\n"
                    % self.kind)
            for key, value in conf.items():
                f.write("%s: %s\n" % (key, value))
        cyrus_conf = ["# %s instance" % self.kind, "START {",
                      '  recover cmd="%s"' % self.command(
                          "ctl_cyrusdb", "-r"), "}", "SERVICES {"]
        for svc, (cmd, listen) in self.services().items():
            cyrus_conf.append('  %s cmd="%s" listen="%s" prefork=0'
                              % (svc, cmd, listen))
        cyrus_conf += ["}", "EVENTS {", "}", ""]
        with open(self.cyrus_conf_path, "w") as f:
            f.write("\n".join(cyrus_conf))

    def command(self, tool, *args):
        """A cyrus.conf cmd= string: master does not pass -C on."""
        return " ".join([os.path.join(CYRUS_BIN, tool), "-C",
                         self.config_path] + list(args))

    def listen(self, service):
        """cyrus.conf listen= for one of this instance's TCP ports."""
        return "127.0.0.1:%d" % self.ports[service]

    def set_config(self, **settings):
        """Change imapd.conf settings.  Services started by `master` from
        now on and later tool runs see them (prefork=0: no idle children)."""
        self.extra_config.update({k: str(v) for k, v in settings.items()})
        self.write_configs()
        chown_cyrus(self.config_path)

    def _create_sasl_users(self):
        for user, password in ((ADMIN_USER, ADMIN_PASSWORD),
                               (REPLICATION_USER, REPLICATION_PASSWORD)):
            self.add_sasl_user(user, password)

    def add_sasl_user(self, user, password):
        """An entry user@servername in this instance's sasldb."""
        sasldb = os.path.join(self.dir, "sasldb2")
        subprocess.run([SASLPASSWD2, "-p", "-c", "-f", sasldb, "-u",
                        self.servername, user], input=password.encode(),
                       check=True, capture_output=True)
        os.chmod(sasldb, 0o640)
        chown_cyrus(sasldb)

    # -- lifecycle --------------------------------------------------------
    def prepare(self):
        """Write the configs, the sasldb and ownership (once)."""
        if self._prepared:
            return
        self.write_configs()
        self._create_sasl_users()
        chown_cyrus(self.dir)
        os.chmod(self.dir, 0o750)
        self._prepared = True

    def start(self):
        """Start master in the foreground, in its own process group, and
        wait until every port (and unix socket) answers."""
        argv = [os.path.join(CYRUS_BIN, "master"), "-C", self.config_path,
                "-M", self.cyrus_conf_path,
                "-p", os.path.join(self.dir, "master.pid"), "-D"]
        argv = with_private_devlog(argv, self.syslog_socket,
                                   os.path.join(self.dir, "dev"))
        self.process = spawn(argv, os.path.join(self.dir, "master.out"))
        self.lab._track(self, self.process)
        self._wait_ready()

    def _ready_probes(self):
        return [("tcp", port) for port in self.ports.values()]

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        pending = self._ready_probes()
        while pending:
            if self.process.poll() is not None:
                raise LabError("%s: master exited with %d during startup"
                               % (self.name, self.process.returncode))
            if time.monotonic() > deadline:
                raise LabError("%s: not ready after %.0fs: %r"
                               % (self.name, READY_TIMEOUT, pending))
            pending = [p for p in pending if not _probe(p)]
            if pending:
                time.sleep(0.05)

    def stop(self):
        """SIGTERM master (it stops its children), then SIGKILL whatever
        is left of its process group."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc)

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    # -- tools --------------------------------------------------------------
    def run_tool(self, tool, *args, timeout=60, stdin_data=None):
        """Run a Cyrus CLI tool (as root; it becomes `cyrus` itself) with
        -C this instance's imapd.conf; its syslog goes to this instance's
        log.  Returns a ToolResult; never raises for a non-zero exit."""
        argv = [os.path.join(CYRUS_BIN, tool), "-C", self.config_path]
        argv += [str(a) for a in args]
        wrapped = with_private_devlog(argv, self.syslog_socket,
                                      os.path.join(self.dir, "dev"))
        result = run_logged(wrapped, os.path.join(self.dir, "tools"), tool,
                            timeout=timeout, stdin_data=stdin_data)
        result.argv = argv
        self.lab.tool_history.append((self.name, result))
        return result

    def log(self):
        """This instance's syslog so far (and master's own output)."""
        self.lab.sink.flush()
        text = ""
        for path in (self.syslog_path, os.path.join(self.dir, "master.out")):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
        return text

    # -- IMAP -------------------------------------------------------------
    def imap(self, user=None):
        """An imaplib connection logged in as `user` via the admin's SASL
        PLAIN proxy authorisation (admin itself when user is None).  The
        caller owns it and should logout()."""
        if "imap" not in self.ports:
            raise LabError("%s has no IMAP service" % self.name)
        conn = imaplib.IMAP4("127.0.0.1", self.ports["imap"])
        authz = user or ""
        token = "%s\0%s\0%s" % (authz, ADMIN_USER, ADMIN_PASSWORD)
        conn.authenticate("PLAIN", lambda _: token.encode())
        return conn

    def mailbox_names(self):
        """Every mailbox the server holds (admin view, internal names such
        as user.alice.Work in the standard namespace), sorted."""
        conn = self.imap()
        try:
            typ, data = conn.list('""', "*")
            check_ok(typ, data, "LIST")
            return sorted(list_name(line) for line in data if line)
        finally:
            conn.logout()

    def snapshot(self, users=None):
        """What the server holds, for comparisons: {mailbox: {"uniqueid",
        "uidvalidity", "uidnext", "highestmodseq", "messages": [{"uid",
        "flags", "guid", "size"}...]}} for every user mailbox (or only
        those of `users`) by admin-view name.  Cyrus's internal mailboxes
        (#sieve) and deleted ones (DELETED.*) are left out.  Each user's
        mailboxes are read through a proxy login as that user (the admin
        has no read right on them)."""
        by_user = {}
        for name in self.mailbox_names():
            user = self.lab.mailbox_owner(name)
            if user is None or users is not None and user not in users:
                continue
            if "#" in name:  # user.x.#sieve etc.: not selectable mail
                continue
            by_user.setdefault(user, []).append(name)
        result = {}
        for user, names in sorted(by_user.items()):
            conn = self.imap(user)
            try:
                for name in names:
                    result[name] = mailbox_state(
                        conn, self.lab.user_view(user, name))
            finally:
                conn.logout()
        return result

    def subscriptions(self, user):
        """The user's subscribed folder names, as the user sees them."""
        conn = self.imap(user)
        try:
            typ, data = conn.lsub('""', "*")
            check_ok(typ, data, "LSUB")
            return sorted(list_name(line) for line in data if line)
        finally:
            conn.logout()


def _probe(probe):
    kind, where = probe
    family = socket.AF_INET if kind == "tcp" else socket.AF_UNIX
    address = ("127.0.0.1", where) if kind == "tcp" else where
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(address)
        return True
    except OSError:
        return False


class Source(Instance):
    """The server being backed up: imapd, lmtpd (TCP + unix socket),
    timsieved; sync_log on, one channel per backup target."""

    kind = "source"

    def __init__(self, lab, name, channels, extra_config=None):
        super().__init__(lab, name, extra_config)
        self.channels = dict(channels)
        self.ports = {"imap": free_port(), "lmtp": free_port(),
                      "sieve": free_port()}
        self.lmtp_socket = os.path.join(self.dir, "run", "lmtp")

    def config(self):
        conf = super().config()
        conf.update({
            "autocreate_post": "yes",
            "autocreate_quota": "0",
            "lmtp_downcase_rcpt": "yes",
            "sync_log": "1",
        })
        if self.channels:
            conf["sync_log_channels"] = " ".join(self.channels)
        for channel, (host, port) in self.channels.items():
            conf.update({
                channel + "_sync_host": host,
                channel + "_sync_port": str(port),
                channel + "_sync_authname": REPLICATION_USER,
                channel + "_sync_password": REPLICATION_PASSWORD,
                # read with atoi(): "no" would also be 0, but say 0
                channel + "_sync_try_imap": "0",
                channel + "_sync_repeat_interval": "1",
            })
        return conf

    def services(self):
        return {
            "imap": (self.command("imapd"), self.listen("imap")),
            "lmtp": (self.command("lmtpd"), self.listen("lmtp")),
            "lmtpunix": (self.command("lmtpd"), self.lmtp_socket),
            "sieve": (self.command("timsieved"), self.listen("sieve")),
        }

    def _ready_probes(self):
        return super()._ready_probes() + [("unix", self.lmtp_socket)]

    def set_channel(self, channel, host, port):
        """Point a channel somewhere else (e.g. at cairn's router)."""
        self.channels[channel] = (host, int(port))
        self.write_configs()
        chown_cyrus(self.config_path)

    # -- mail -----------------------------------------------------------
    def deliver(self, user, *messages):
        """Deliver messages (bytes) to user's INBOX over the LMTP unix
        socket (TCP LMTP refuses unauthenticated delivery).  Creates the
        INBOX on first delivery."""
        conn = smtplib.LMTP(self.lmtp_socket)
        try:
            for message in messages:
                refused = conn.sendmail("sender@cyruslab.example", [user],
                                        message)
                if refused:
                    raise LabError("LMTP refused %s: %r" % (user, refused))
        finally:
            conn.quit()

    def create_user(self, user):
        """Create user's INBOX without mail (admin CREATE user.<user>)."""
        conn = self.imap()
        try:
            typ, data = conn.create(self.lab.user_mailbox(user))
            check_ok(typ, data, "CREATE")
        finally:
            conn.logout()

    def sieve(self, user):
        """A ManageSieve connection authenticated as user (caller closes)."""
        return ManageSieve(self.ports["sieve"], user, ADMIN_USER,
                           ADMIN_PASSWORD)

    # -- replication ----------------------------------------------------
    def sync_client(self, users=None, channel=None, all_users=False,
                    rolling_once=False, server=None, verbose=True,
                    extra_args=(), timeout=120):
        """Run sync_client once: `-u USER...`, `-A`, or one rolling pass
        over the sync log (`-R -1`); `-n channel`, `-S host:port`."""
        args = []
        if verbose:
            args.append("-v")
        if channel:
            args += ["-n", channel]
        if server:
            args += ["-S", server]
        if rolling_once:
            args += ["-R", "-1"]
        elif all_users:
            args.append("-A")
        else:
            if not users:
                raise ValueError("sync_client needs users, all_users or "
                                 "rolling_once")
            args.append("-u")
        args += list(extra_args)
        if users and not rolling_once and not all_users:
            args += list(users)
        return self.run_tool("sync_client", *args, timeout=timeout)

    def start_rolling_sync(self, channel, server=None, extra_args=()):
        """Start rolling replication (`sync_client -R -n channel`) in the
        background; returns its RollingSync (the lab stops it at close)."""
        return RollingSync(self, channel, server, extra_args)


class RollingSync:
    """A rolling `sync_client -R` in the foreground: replicates what the
    sync log names until stop() (shutdown file, then signals)."""

    def __init__(self, source, channel, server=None, extra_args=()):
        self.source = source
        tools = os.path.join(source.dir, "tools")
        os.makedirs(tools, exist_ok=True)
        self.shutdown_file = os.path.join(tools, "rolling-%s.stop" % channel)
        self.output_path = os.path.join(tools, "rolling-%s.out" % channel)
        argv = [os.path.join(CYRUS_BIN, "sync_client"), "-C",
                source.config_path, "-v", "-n", channel, "-R",
                "-F", self.shutdown_file]
        if server:
            argv += ["-S", server]
        argv += list(extra_args)
        self.argv = argv
        self.process = spawn(with_private_devlog(
            argv, source.syslog_socket, os.path.join(source.dir, "dev")),
            self.output_path)
        source.lab._track(self, self.process)

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout=10):
        """Ask sync_client to finish (shutdown file), then make it."""
        proc, self.process = self.process, None
        if proc is None:
            return
        with open(self.shutdown_file, "w"):
            pass
        chown_cyrus(self.shutdown_file)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        stop_process(proc)

    def output(self):
        with open(self.output_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Backup(Instance):
    """Cyrus's backupd (the reference backup server), plus the tools that
    read its files and `restore`, which runs from here."""

    kind = "backup"

    def __init__(self, lab, name, extra_config=None):
        super().__init__(lab, name, extra_config)
        self.ports = {"csync": free_port()}
        self.data_dir = os.path.join(self.dir, "data")
        self.backups_db = os.path.join(self.dir, "conf", "backups.db")
        os.makedirs(self.data_dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "tmp", "backup"), exist_ok=True)

    @property
    def csync_address(self):
        return ("127.0.0.1", self.ports["csync"])

    def config(self):
        conf = super().config()
        conf.update({
            "backuppartition-default": self.data_dir,
            "backup_db": "twoskip",
            "backup_db_path": self.backups_db,
            "backup_staging_path": self.dir + "/tmp/backup",
            "backup_retention": "7d",
            # restore(8) connects with the default channel's settings
            "sync_authname": REPLICATION_USER,
            "sync_password": REPLICATION_PASSWORD,
            "sync_try_imap": "0",
        })
        return conf

    def services(self):
        return {"backupd": (self.command("backupd"),
                            self.listen("csync"))}

    def ctl_backups(self, command, *args, timeout=60):
        """`ctl_backups COMMAND ARGS` (e.g. "verify", "-A")."""
        return self.run_tool("ctl_backups", command, *args, timeout=timeout)

    def cyr_backup(self, user, *args, timeout=60):
        """`cyr_backup -u USER ARGS` (e.g. "list", "all")."""
        return self.run_tool("cyr_backup", "-u", user, *args, timeout=timeout)

    def mailboxes(self, user):
        """The user's backup as Cyrus reads it (`cyr_backup json
        mailboxes`): [{"mboxname", "uniqueid", "messages": [{"uid",
        "guid"}...]}...].  Raises LabError if cyr_backup fails."""
        r = self.cyr_backup(user, "json", "mailboxes")
        if not r.ok:
            raise LabError(str(r))
        return json.loads(r.stdout)

    def backup_files(self):
        """{user: data file path} from backups.db (each has a .index)."""
        r = self.run_tool("cyr_dbtool", self.backups_db, "twoskip", "show")
        if not r.ok:
            raise LabError(str(r))
        files = {}
        for line in r.stdout.splitlines():
            if "\t" in line:
                user, path = line.split("\t", 1)
                files[user] = path
        return files

    def restore(self, backup, replica, extra_args=("-U", "-a"), mode="-u",
                timeout=120):
        """`restore` every mailbox of a backup into the replica's
        sync_server (`-U`: keep uniqueids, UIDs, modseqs).  backup is a
        userid (mode "-u", looked up in backups.db) or a data file path
        (mode "-f": e.g. cairn's file, from a tools-only instance)."""
        server = "127.0.0.1:%d" % replica.ports["csync"]
        return self.run_tool("restore", "-v", *extra_args, server, mode,
                             backup, timeout=timeout)


class Replica(Instance):
    """A restore target / replication target: sync_server + imapd."""

    kind = "replica"

    def __init__(self, lab, name, extra_config=None):
        super().__init__(lab, name, extra_config)
        self.ports = {"imap": free_port(), "csync": free_port()}

    @property
    def csync_address(self):
        return ("127.0.0.1", self.ports["csync"])

    def services(self):
        return {
            "imap": (self.command("imapd"), self.listen("imap")),
            "syncserver": (self.command("sync_server"),
                           self.listen("csync")),
        }


# ------------------------------------------------------------------- lab

_sigterm_installed = False


def _exit_on_sigterm():
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not \
            threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + 15))
    _sigterm_installed = True


class Lab:
    """A temp directory of Cyrus instances; a context manager that stops
    everything it started and removes the directory on exit (kept, with
    its path printed, when CYRUSLAB_KEEP=1 or keep=True)."""

    def __init__(self, keep=None, unixhierarchysep=False, prefix="cyruslab-"):
        if keep is None:
            keep = os.environ.get("CYRUSLAB_KEEP") == "1"
        self.keep = keep
        self.unixhierarchysep = unixhierarchysep
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.dir, 0o755)  # cyrus must reach its instance dirs
        self.instances = {}
        self.sink = SyslogSink()
        self.tool_history = []
        self._started = []
        self._closed = False
        self._watchdog = Watchdog(None if keep else self.dir)
        # stop what we started also on exit without `with`, and on SIGTERM
        # (ctest's timeout): turned into SystemExit so cleanup runs
        atexit.register(self.close)
        _exit_on_sigterm()

    # the namespace must match across source, backup and replica
    def namespace_config(self):
        return {"altnamespace": "no",
                "unixhierarchysep": "yes" if self.unixhierarchysep else "no"}

    @property
    def separator(self):
        return "/" if self.unixhierarchysep else "."

    def user_mailbox(self, user, folder=None):
        """Admin-view name of user's INBOX or of one of its folders."""
        name = "user%s%s" % (self.separator, user)
        return name + self.separator + folder if folder else name

    def mailbox_owner(self, name):
        """The user owning an admin-view mailbox name, or None."""
        parts = name.split(self.separator)
        return parts[1] if len(parts) > 1 and parts[0] == "user" else None

    def user_view(self, user, name):
        """An admin-view name of user's mailbox as the user sees it."""
        inbox = self.user_mailbox(user)
        if name == inbox:
            return "INBOX"
        if name.startswith(inbox + self.separator):
            return "INBOX" + name[len(inbox):]
        return name

    def _add(self, instance):
        if instance.name in self.instances:
            raise ValueError("instance %s exists" % instance.name)
        self.instances[instance.name] = instance
        self.sink.add(instance.syslog_socket, instance.syslog_path)
        return instance

    def add_source(self, name="source", channels=None, extra_config=None):
        """channels: {name: (host, port)} (e.g. backup.csync_address)."""
        return self._add(Source(self, name, channels or {}, extra_config))

    def add_backup(self, name="backup", extra_config=None):
        return self._add(Backup(self, name, extra_config))

    def add_replica(self, name="replica", extra_config=None):
        return self._add(Replica(self, name, extra_config))

    def add_tools_only(self, name="tools", extra_config=None):
        """A backup-server configuration that is never started: for running
        ctl_backups, cyr_backup, cyr_dbtool or restore on files put in its
        data_dir (chown_cyrus them, register them in backups_db)."""
        instance = self._add(Backup(self, name, extra_config))
        instance.tools_only = True
        instance.write_configs()
        chown_cyrus(instance.dir)
        instance._prepared = True
        return instance

    def start(self):
        """Write configs and start every instance not yet running (an
        instance stopped with stop() starts again with its data)."""
        for instance in self.instances.values():
            if not instance.running and not instance.tools_only:
                instance.prepare()
                instance.start()

    def _track(self, owner, process):
        """owner (with a stop()) started process, a group leader."""
        self._started.append(owner)
        self._watchdog.track(process.pid)

    def logs(self):
        """Every instance's syslog, for diagnosing a failure."""
        parts = []
        for instance in self.instances.values():
            parts.append("===== %s (%s) syslog =====\n%s"
                         % (instance.name, instance.dir, instance.log()))
        for name, result in self.tool_history[-10:]:
            parts.append("===== %s tool run =====\n%s" % (name, result))
        return "\n".join(parts)

    def close(self, failed=False):
        if self._closed:
            return
        self._closed = True
        try:
            for instance in reversed(self._started):
                instance.stop()
            self._watchdog.release()
        finally:
            if failed:
                sys.stderr.write(self.logs() + "\n")
            self.sink.close()
            if self.keep or failed and os.environ.get("CYRUSLAB_KEEP_FAILED"):
                sys.stderr.write("cyruslab: kept %s\n" % self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)
        return False


