#!/usr/bin/env python3
"""test_install_package.py - cairn as an administrator installs it.

Builds the Debian package (cpack -G DEB) from the build directory,
unpacks it into a fresh root, and checks what it holds:
  - the files where the install rules put them;
  - `systemd-analyze verify` accepts both units (skipped, with a reason,
    when systemd-analyze is missing);
  - every man page renders with `man -l` without a warning;
  - lintian finds zero errors in the .deb;
  - cairn-node and cairn-router start exactly as the units' ExecStart
    lines say (program and arguments; the unit's /usr and /etc/cairn
    mapped into the unpacked root and the test's directory), as an
    unprivileged user (nobody, as the unit runs as cairn), with
    NOTIFY_SOCKET pointing at a socket this test reads: READY=1 arrives
    from each, `cairnctl status` (the packaged one) answers, SIGHUP gives
    RELOADING=1 then READY=1, SIGTERM gives STOPPING=1 and exit 0.

usage: test_install_package.py BUILD_DIR
Exit 77 (ctest skip) when not root (the daemons must switch to nobody) or
when cpack, dpkg-deb, lintian or man is missing.
"""
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HANG_GUARD = 60  # seconds; a wait that passes it is a hang, not a timing


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def skip(message):
    print("SKIP: " + message)
    sys.exit(77)


def run(command, **kwargs):
    return subprocess.run(command, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_package(build_dir, work):
    started = time.monotonic()
    result = run(["cpack", "-G", "DEB", "-B", work,
                  "--config", os.path.join(build_dir, "CPackConfig.cmake")])
    if result.returncode != 0:
        fail("cpack -G DEB: " + result.stdout[-2000:] + result.stderr[-2000:])
    debs = glob.glob(os.path.join(work, "cairn_*.deb"))
    if len(debs) != 1:
        fail("cpack made %r, expected one cairn_*.deb" % debs)
    print("package %s built in %.1f s" % (os.path.basename(debs[0]),
                                          time.monotonic() - started))
    return debs[0]


def check_layout(root):
    expected = ["usr/sbin/cairn-router", "usr/sbin/cairn-node",
                "usr/bin/cairnctl",
                "usr/share/man/man8/cairn-router.8.gz",
                "usr/share/man/man8/cairn-node.8.gz",
                "usr/share/man/man8/cairnctl.8.gz",
                "usr/share/man/man5/cluster.conf.5.gz",
                "usr/share/doc/cairn/cluster.example.conf",
                "lib/systemd/system/cairn-router.service",
                "lib/systemd/system/cairn-node@.service"]
    for path in expected:
        # /lib is /usr/lib on a merged-/usr system: either is the unit dir
        candidates = [path, "usr/" + path] if path.startswith("lib/") else [path]
        if not any(os.path.isfile(os.path.join(root, c)) for c in candidates):
            fail("the package does not install " + path)


def unit_dir(root):
    for candidate in ("lib/systemd/system", "usr/lib/systemd/system"):
        if os.path.isfile(os.path.join(root, candidate,
                                       "cairn-router.service")):
            return os.path.join(root, candidate)
    fail("no unit directory in the package")


def verify_units(root):
    if shutil.which("systemd-analyze") is None:
        print("systemd-analyze verify: SKIPPED, systemd-analyze is not "
              "installed")
        return
    # A root of its own: the package's units, the targets they name (from
    # this machine) and /bin/kill for ExecReload.
    verify_root = tempfile.mkdtemp(prefix="verify-", dir=os.path.dirname(root))
    shutil.copytree(root, verify_root, dirs_exist_ok=True, symlinks=True)
    units = os.path.join(verify_root, "usr/lib/systemd/system")
    os.makedirs(units, exist_ok=True)
    for name in glob.glob(os.path.join(unit_dir(root), "cairn-*")):
        shutil.copy(name, units)
    for pattern in ("/lib/systemd/system/*.target",
                    "/lib/systemd/system/*.slice"):
        for name in glob.glob(pattern):
            target = os.path.join(units, os.path.basename(name))
            if not os.path.exists(target):
                shutil.copy(name, target)
    os.makedirs(os.path.join(verify_root, "bin"), exist_ok=True)
    shutil.copy(shutil.which("kill"), os.path.join(verify_root, "bin/kill"))
    result = run(["systemd-analyze", "--man=no", "--root=" + verify_root,
                  "verify", "cairn-router.service",
                  "cairn-node@node1.service"])
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or output:
        fail("systemd-analyze verify: exit %d: %s" % (result.returncode,
                                                       output))
    print("systemd-analyze verify: both units accepted")


def render_man_pages(root):
    pages = sorted(glob.glob(os.path.join(root, "usr/share/man/man*/*.gz")))
    if len(pages) != 4:
        fail("expected 4 man pages, found %r" % pages)
    environment = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    for page in pages:
        result = run(["man", "--warnings", "-l", page], env=environment)
        if result.returncode != 0 or result.stderr.strip():
            fail("man -l %s: exit %d: %s" % (page, result.returncode,
                                             result.stderr.strip()))
        if "SYNOPSIS" not in result.stdout or "SEE ALSO" not in result.stdout:
            fail("man -l %s: no SYNOPSIS or SEE ALSO" % page)
    print("man -l: %d pages rendered without a warning" % len(pages))
    return pages


def check_pages_complete(root, pages):
    """The hand-written daemon pages describe every option of --help."""
    environment = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8")
    for program in ("cairn-router", "cairn-node"):
        usage = run([os.path.join(root, "usr/sbin", program), "--help"]).stdout
        page = [p for p in pages if os.path.basename(p) == program + ".8.gz"]
        text = run(["man", "-l", page[0]], env=environment).stdout
        for option in sorted(set(re.findall(r"(?<![\w-])(-[a-z]|--[a-z-]+)",
                                            usage))):
            if option not in text:
                fail("%s(8) does not describe %s (in --help)" % (program,
                                                                 option))
    environment["MANWIDTH"] = "200"
    cairnctl = run([os.path.join(root, "usr/bin/cairnctl"), "help",
                    "--commands"]).stdout.split("\n")
    page = [p for p in pages if os.path.basename(p) == "cairnctl.8.gz"][0]
    text = run(["man", "-l", page], env=environment).stdout
    for words in filter(None, cairnctl):
        command = words.split()[0]
        if not re.search(r"^\s+%s\s*$" % re.escape(command), text, re.M):
            fail("cairnctl(8) has no section for %s" % command)


def run_lintian(deb):
    if shutil.which("lintian") is None:
        skip("lintian is not installed (scripts/install-deps.sh)")
    result = run(["lintian", "--tag-display-limit", "0", deb])
    errors = [line for line in result.stdout.splitlines()
              if line.startswith("E:")]
    print("lintian: %d error(s), %d other tag(s)" % (
        len(errors), len(result.stdout.splitlines()) - len(errors)))
    for line in result.stdout.splitlines():
        print("  " + line)
    if errors:
        fail("lintian errors in %s" % deb)


def exec_start(units, unit, instance, root, conf):
    """The unit's ExecStart as argv, mapped into the unpacked root."""
    with open(os.path.join(units, unit)) as handle:
        lines = [line.split("=", 1)[1].strip() for line in handle
                 if line.startswith("ExecStart=")]
    if len(lines) != 1:
        fail("%s has %d ExecStart lines" % (unit, len(lines)))
    argv = []
    for word in lines[0].replace("%i", instance).split():
        if word == "/etc/cairn/cluster.conf":
            word = conf
        elif word.startswith("/usr/"):
            word = os.path.join(root, word[1:])
        argv.append(word)
    return argv, lines[0]


def unit_user(units, unit):
    with open(os.path.join(units, unit)) as handle:
        for line in handle:
            if line.startswith("User="):
                return line.strip().split("=", 1)[1]
    fail(unit + " has no User=")


class Notifications:
    """A datagram socket as systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)  # the daemon runs as nobody
        self.seen = []

    def wait_for(self, field, process):
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            for message in self.seen:
                if field in message.split("\n"):
                    self.seen.remove(message)
                    return message
            exited = process.poll() is not None
            # what it sent before it exited is still in the socket
            self.sock.settimeout(0 if exited else 1)
            if exited and not self.drain():
                fail("the daemon exited (%d) before %s" % (process.returncode,
                                                           field))
            if exited:
                continue
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        fail("no %s within %d s (hang guard)" % (field, HANG_GUARD))

    def drain(self):
        """Reads every waiting message; False when there was none."""
        count = 0
        while True:
            try:
                self.seen.append(self.sock.recv(4096).decode())
                count += 1
            except (BlockingIOError, socket.timeout):
                return count > 0


def write_config(work, node_port, router_port, control_port):
    state = os.path.join(work, "state")  # StateDirectory=cairn
    os.makedirs(state)
    conf = os.path.join(work, "etc-cairn", "cluster.conf")
    os.makedirs(os.path.dirname(conf))
    with open(conf, "w") as handle:
        handle.write("""# test_install_package: one router, one node
[router]
control = tcp://127.0.0.1:%(control)d
spool_dir = %(state)s/spool
ring_dir = %(state)s/rings
state_dir = %(state)s/router

[channel backup]
listen = 127.0.0.1:%(router)d
sasl_user = repl
sasl_password = secret
destinations = main

[destination main]
nodes = node1
replicas = 1

[node node1]
endpoint = tcp://127.0.0.1:%(node)d
data_dir = %(state)s/node1

[security]
curve_key_dir = %(state)s/keys
""" % {"control": control_port, "state": state, "router": router_port,
           "node": node_port})
    return conf, state


def as_user(user, argv):
    entry = pwd.getpwnam(user)
    return ["setpriv", "--reuid=%d" % entry.pw_uid,
            "--regid=%d" % entry.pw_gid, "--clear-groups", "--"] + argv


def start_daemons(root, work, units):
    node_port, router_port, control_port = free_port(), free_port(), free_port()
    conf, state = write_config(work, node_port, router_port, control_port)
    user = "nobody"
    group = pwd.getpwnam(user).pw_gid
    print("units run as %s; this test runs them as %s" % (
        unit_user(units, "cairn-router.service"), user))
    cairnctl = os.path.join(root, "usr/bin/cairnctl")
    os.chown(state, pwd.getpwnam(user).pw_uid, group)
    os.chmod(work, 0o755)
    # cairnctl's key, made the way the operator's guide says
    result = run(as_user(user, [cairnctl, "-c", conf, "keys", "create",
                                "admin"]))
    if result.returncode != 0:
        fail("cairnctl keys create admin: " + result.stderr)
    # the destination's ring, as the guide makes it
    ring = os.path.join(state, "rings", "main.ring")
    result = run(as_user(user, ["mkdir", "-p", os.path.dirname(ring)]))
    result = run(as_user(user, [cairnctl, "-c", conf, "ring", "create", ring,
                                "--from-config", "main"]))
    if result.returncode != 0:
        fail("cairnctl ring create: " + result.stdout + result.stderr)
    processes = []
    try:
        for unit, instance in (("cairn-node@.service", "node1"),
                               ("cairn-router.service", "")):
            argv, line = exec_start(units, unit, instance, root, conf)
            socket_path = os.path.join(work, "notify-%s.sock" % unit[:10])
            notifications = Notifications(socket_path)
            environment = dict(os.environ, NOTIFY_SOCKET=socket_path)
            print("$ %s   # %s ExecStart=%s" % (" ".join(argv), unit, line))
            process = subprocess.Popen(as_user(user, argv), env=environment,
                                       stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(
                                           work, unit + ".log"), "w"))
            processes.append((unit, process, notifications))
            message = notifications.wait_for("READY=1", process)
            print("  %s: %s" % (unit, message.replace("\n", " ")))
        status = run(as_user(user, [cairnctl, "-c", conf, "status"]))
        print("$ cairnctl status\n" + status.stdout + status.stderr)
        # both daemons answer: the node's row, and the router's view of it
        if (status.returncode != 0 or
                not re.search(r"^node1 .* up$", status.stdout, re.M) or
                not re.search(r"^router tcp://.*destination main",
                              status.stdout, re.M)):
            fail("cairnctl status: exit %d, node1 or the router missing" %
                 status.returncode)
        for unit, process, notifications in processes:
            process.send_signal(signal.SIGHUP)
            notifications.wait_for("RELOADING=1", process)
            notifications.wait_for("READY=1", process)
            print("  %s: SIGHUP -> RELOADING=1, READY=1" % unit)
        for unit, process, notifications in reversed(processes):
            process.send_signal(signal.SIGTERM)
            notifications.wait_for("STOPPING=1", process)
            code = process.wait(timeout=HANG_GUARD)
            print("  %s: SIGTERM -> STOPPING=1, exit %d" % (unit, code))
            if code != 0:
                fail("%s exited %d after SIGTERM" % (unit, code))
    finally:
        for unit, process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for name in glob.glob(os.path.join(work, "*.log")):
            with open(name) as handle:
                text = handle.read()
            if "error" in text.lower():
                print("--- %s\n%s" % (name, text))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    build_dir = sys.argv[1]
    if os.geteuid() != 0:
        skip("needs root to run the daemons as an unprivileged user")
    for program in ("cpack", "dpkg-deb", "man", "setpriv"):
        if shutil.which(program) is None:
            skip(program + " is not installed (scripts/install-deps.sh)")
    work = tempfile.mkdtemp(prefix="cairn-install-")
    try:
        deb = os.environ.get("CAIRN_TEST_DEB") or build_package(
            build_dir, os.path.join(work, "package"))
        root = os.path.join(work, "root")
        result = run(["dpkg-deb", "-x", deb, root])
        if result.returncode != 0:
            fail("dpkg-deb -x: " + result.stderr)
        check_layout(root)
        verify_units(root)
        pages = render_man_pages(root)
        check_pages_complete(root, pages)
        run_lintian(deb)
        start_daemons(root, work, unit_dir(root))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("test_install_package: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
