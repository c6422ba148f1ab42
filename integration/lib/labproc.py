"""labproc -- the process side of cyruslab: running Cyrus programs with a
private /dev/log, capturing their syslog, tool runs with timeouts, and
stopping what was started (also when the test process dies).

Cyrus logs only through syslog(3), which always writes to /dev/log.  Rather
than touch the machine's /dev/log, every Cyrus process runs in a private
mount namespace whose /dev is a small tmpfs: the usual device nodes are bind
mounted into it and /dev/log is the lab's own datagram socket, one per
instance.  A SyslogSink thread writes what arrives to a file.

Python 3 standard library only.
"""
import dataclasses
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TIMED_OUT = -9       # ToolResult.returncode of a tool killed at its timeout
STOP_TIMEOUT = 5.0


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on right now, taken
    below the kernel's ephemeral range: a daemon a test stops and starts
    again must get its port back, and the kernel may hand an ephemeral port
    to any outgoing connection meanwhile (a router reconnecting to a
    stopped node can even connect to itself on the node's port)."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    candidates = (random.randrange(max(1024, low - 16384), low)
                  for _ in range(200)) if low > 2048 else ()
    for port in list(candidates) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free TCP port on 127.0.0.1")


class SyslogSink:
    """Receives syslog datagrams on unix sockets; one log file per socket."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._files = []

    def add(self, socket_path, log_path):
        """Bind socket_path (mode 666: Cyrus writes as `cyrus`)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(socket_path)
        os.chmod(socket_path, 0o666)
        sock.setblocking(False)
        out = open(log_path, "ab", buffering=0)
        self._files.append((sock, out))
        with self._lock:
            self._selector.register(sock, selectors.EVENT_READ, out)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            with self._lock:
                for key, _ in self._selector.select(timeout=0.1):
                    while self._write(key.fileobj, key.data):
                        pass

    @staticmethod
    def _write(sock, out):
        """Move one datagram to its file; False when none is queued."""
        try:
            data = sock.recv(65536)
        except (BlockingIOError, OSError):
            return False
        # "<PRI>Mmm dd hh:mm:ss ident[pid]: text": keep all but the priority
        if data.startswith(b"<"):
            end = data.find(b">")
            if 0 < end < 5:
                data = data[end + 1:]
        millis = int(time.time() * 1000) % 1000
        stamp = time.strftime("%H:%M:%S") + ".%03d " % millis
        out.write(stamp.encode() + data.rstrip(b"\n\0") + b"\n")
        return True

    def flush(self):
        """Write out every datagram queued now."""
        with self._lock:
            for key in list(self._selector.get_map().values()):
                while self._write(key.fileobj, key.data):
                    pass

    def close(self):
        self.flush()
        self._stop.set()
        if self._thread:
            self._thread.join()
        for sock, out in self._files:
            sock.close()
            out.close()
        self._files = []


# The private /dev every Cyrus process of a lab runs with: $1 is the lab's
# syslog socket for that instance, $2 an empty directory to build /dev in.
DEVLOG_SCRIPT = r"""
set -e
sock=$1; dev=$2; shift 2
mount -t tmpfs -o mode=0755,size=64k cyruslab-dev "$dev"
for n in null zero full random urandom tty ptmx; do
    [ -e "/dev/$n" ] || continue
    : > "$dev/$n"
    mount --bind "/dev/$n" "$dev/$n"
done
for d in pts shm mqueue; do
    [ -d "/dev/$d" ] || continue
    mkdir "$dev/$d"
    mount --rbind "/dev/$d" "$dev/$d"
done
ln -s /proc/self/fd "$dev/fd"
ln -s /proc/self/fd/0 "$dev/stdin"
ln -s /proc/self/fd/1 "$dev/stdout"
ln -s /proc/self/fd/2 "$dev/stderr"
: > "$dev/log"
mount --bind "$sock" "$dev/log"
mount --move "$dev" /dev
exec "$@"
"""

_namespaces_work = None


def private_dev_available():
    """True if this process may make mount namespaces (checked once)."""
    global _namespaces_work
    if _namespaces_work is None:
        try:
            r = subprocess.run(["unshare", "--mount", "--propagation",
                                "private", "true"], capture_output=True,
                               timeout=10)
            _namespaces_work = r.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _namespaces_work = False
    return _namespaces_work


def with_private_devlog(argv, socket_path, dev_dir):
    """argv wrapped to run with socket_path as its /dev/log (see above).

    Without mount namespaces the command runs as it is and its syslog
    output is lost (never redirected into the machine's /dev/log by us)."""
    if not private_dev_available():
        return list(argv)
    return (["unshare", "--mount", "--propagation", "private", "sh", "-c",
             DEVLOG_SCRIPT, "cyruslab-dev", socket_path, dev_dir] + list(argv))


# ------------------------------------------------------------- tool results

@dataclasses.dataclass
class ToolResult:
    """What one Cyrus command-line tool run did."""
    argv: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self):
        return self.returncode == 0

    def __str__(self):
        return ("$ %s\nexit %d after %.2fs\n--- stdout\n%s--- stderr\n%s"
                % (" ".join(self.argv), self.returncode, self.seconds,
                   self.stdout, self.stderr))


def run_logged(argv, work_dir, name, timeout=60, env=None, stdin_data=None):
    """Run argv with stdout/stderr in files under work_dir (never pipes:
    `sync_client -r` forks and keeps them open), stdin_data (bytes) or
    nothing on its stdin.  Returns a ToolResult;
    a timeout kills the command's process group: returncode TIMED_OUT."""
    os.makedirs(work_dir, exist_ok=True)
    stamp = "%s-%d" % (name, time.monotonic_ns())
    out_path = os.path.join(work_dir, stamp + ".out")
    err_path = os.path.join(work_dir, stamp + ".err")
    started = time.monotonic()
    stdin = subprocess.DEVNULL
    if stdin_data is not None:
        stdin = tempfile.TemporaryFile(dir=work_dir)
        stdin.write(stdin_data)
        stdin.seek(0)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out,
                                stderr=err, start_new_session=True, env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = TIMED_OUT
    if stdin_data is not None:
        stdin.close()
    with open(out_path, "rb") as f:
        stdout = f.read().decode("utf-8", "replace")
    with open(err_path, "rb") as f:
        stderr = f.read().decode("utf-8", "replace")
    return ToolResult(list(argv), rc, stdout, stderr,
                      time.monotonic() - started)


def spawn(argv, log_path):
    """Start argv in its own session (process group), output appended to
    log_path.  Returns the Popen; the caller owns it (stop_process)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_process(proc, timeout=STOP_TIMEOUT):
    """SIGTERM proc, SIGKILL it after timeout, then SIGKILL whatever is
    left of its process group (which it leads: see spawn)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
    kill_group(proc.pid, signal.SIGTERM)
    time.sleep(0.05)
    kill_group(proc.pid, signal.SIGKILL)


# Run by a lab's watchdog process: its stdin is a pipe from the lab, which
# sends the process group of everything it starts, and "done" when it has
# stopped them itself.  EOF without "done" means the lab's process died
# (even by SIGKILL): then the watchdog stops those groups, so no root
# `master` outlives its test, and removes the lab's directory if given.
# (PR_SET_PDEATHSIG would not do: master does not keep it.)
WATCHDOG_SCRIPT = r"""
import os, shutil, signal, sys, time
data = b""
while True:
    chunk = os.read(0, 4096)
    if not chunk:
        break
    data += chunk
words = data.split()
if b"done" not in words:
    groups = [int(w) for w in words if w.isdigit()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except OSError:
                pass
        time.sleep(2)
    if sys.argv[1:]:
        shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


class Watchdog:
    """Stops a lab's process groups if the lab's process dies first."""

    def __init__(self, directory=None):
        read_end, self._write_end = os.pipe()
        argv = [sys.executable, "-c", WATCHDOG_SCRIPT]
        if directory:
            argv.append(directory)
        self.process = subprocess.Popen(
            argv, stdin=read_end, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(read_end)

    def track(self, pgid):
        os.write(self._write_end, b"%d\n" % pgid)

    def release(self):
        """Everything is stopped: let the watchdog go without killing."""
        if self._write_end is None:
            return
        os.write(self._write_end, b"done\n")
        os.close(self._write_end)
        self._write_end = None
        self.process.wait()


def kill_group(pgid, sig):
    """Signal a process group that may already be gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
