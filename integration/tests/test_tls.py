#!/usr/bin/env python3
"""TLS on the router's csync listeners and in cairnctl restore (issue 10,
part 3), with real Cyrus 3.6 programs and a throwaway CA made with the
openssl command in the test's temp directory.

 a. Two channels: "cairn" (STARTTLS, require_tls, client certificates
    from the test CA whose CN must be "cyrus-source") and "implicit"
    (tls_mode = implicit; the Cyrus side says sync_host HOST:PORT/tls).
    A real `sync_client -u` backs users up through each (COMPRESS on
    inside TLS; the implicit channel with sync_try_imap, so its IMAP probe
    comes over TLS too), via a TCP relay
    in this test that records the bytes: the STARTTLS channel's
    recording holds "STARTTLS" and the OK, but no AUTHENTICATE and no
    APPLY; the implicit channel's holds no plain csync at all (both ways
    start with a TLS record). cairnctl verify accepts every user and the
    backups equal the source.
 b. require_tls: a client that does not do TLS sees "* STARTTLS" and no
    "* SASL"; its AUTHENTICATE gets NO; its APPLY gets NO; nothing stored.
 c. Client certificates: CN=cyrus-source logs in; CN=intruder (same CA)
    gets a banner without SASL and NO to AUTHENTICATE; a certificate of
    another CA, and none at all, fail the handshake.
 d. `cairnctl restore --starttls --ca-file CA` into a real sync_server
    with tls_server_cert/tls_server_key restores a user over TLS with the
    certificate verified; with the wrong CA it fails, naming the check,
    and nothing is restored.
 e. A tls_cert that does not exist: the router does not start and says
    which file.
 f. A renewed certificate put in place of the old one is served after
    SIGHUP (no restart).

usage: test_tls.py [--router P] [--node P] [--cairnctl P]
Exit 77 (ctest SKIP) when not root or Cyrus is not installed.
"""
import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import cairncluster  # noqa: E402
import cyruslab  # noqa: E402
import labmail  # noqa: E402
from test_e2e_sync import compare_with_source  # noqa: E402
from test_restore_cairn import contents  # noqa: E402

STARTED = time.monotonic()
STARTTLS_USERS = ["alice", "bob"]
IMPLICIT_USERS = ["carol", "dave"]
CLIENT_CN = "cyrus-source"


def expect(condition, what, detail=""):
    if not condition:
        raise AssertionError("%s\n%s" % (what, detail))
    print("ok - %s (%.1fs)" % (what, time.monotonic() - STARTED))


# -- a throwaway PKI --------------------------------------------------------

def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


def make_ca(pki, name):
    key, cert = os.path.join(pki, name + ".key"), os.path.join(pki,
                                                              name + ".pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/O=cairn test/CN=%s" % name, "-keyout", key,
            "-out", cert)
    return key, cert


def make_cert(pki, name, cn, ca, san=None):
    """A key and a certificate with CN=cn signed by ca (key, cert)."""
    key, csr = os.path.join(pki, name + ".key"), os.path.join(pki,
                                                             name + ".csr")
    cert, ext = os.path.join(pki, name + ".pem"), os.path.join(pki,
                                                              name + ".ext")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-subj",
            "/O=cairn test/CN=%s" % cn, "-keyout", key, "-out", csr)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        if san:
            f.write("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0],
            "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert)
    return key, cert


def make_pki(pki):
    ca = make_ca(pki, "ca")
    rogue_ca = make_ca(pki, "rogue-ca")
    certs = {
        "ca": ca, "rogue-ca": rogue_ca,
        "server": make_cert(pki, "server", "127.0.0.1", ca,
                            "IP:127.0.0.1,DNS:localhost"),
        "client": make_cert(pki, "client", CLIENT_CN, ca),
        "intruder": make_cert(pki, "intruder", "intruder", ca),
        "rogue": make_cert(pki, "rogue", CLIENT_CN, rogue_ca),
    }
    # Cyrus (user cyrus) reads its certificate and keys from here.
    cyruslab.chown_cyrus(pki)
    os.chmod(pki, 0o755)
    return certs


# -- a recording TCP relay ----------------------------------------------------

class Relay:
    """Listens on a free port and passes every connection on to target,
    keeping what went each way (client->server, server->client) per
    connection."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = []  # [[bytearray up, bytearray down]]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            record = [bytearray(), bytearray()]
            with self.lock:
                self.connections.append(record)
            for source, sink, log in ((client, server, record[0]),
                                      (server, client, record[1])):
                threading.Thread(target=self._pump,
                                 args=(source, sink, log),
                                 daemon=True).start()

    def _pump(self, source, sink, log):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self.lock:
                    log.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        for s in (sink, source):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def recordings(self):
        with self.lock:
            return [(bytes(up), bytes(down)) for up, down in self.connections]

    def close(self):
        self.listener.close()


# -- the cluster with a second, implicit-TLS channel --------------------------

class TlsCluster(cairncluster.Cluster):
    """cairncluster's cluster plus [channel implicit] on its own port."""

    def __init__(self, binaries, implicit_settings, **kwargs):
        self.implicit_port = cairncluster.free_port()
        self.implicit_settings = implicit_settings
        super().__init__(binaries, **kwargs)
        # Daemons that refuse to stay root without [security] user run
        # with --allow-root here (the test runs as root for Cyrus).
        for daemon in self.daemons.values():
            if "--allow-root" not in daemon.argv and allows_root(
                    daemon.argv[0]):
                daemon.argv.insert(1, "--allow-root")

    def _write_config(self):
        super()._write_config()
        lines = ["[channel implicit]",
                 "listen = 127.0.0.1:%d" % self.implicit_port,
                 "sasl_user = %s" % self.sasl_user,
                 "sasl_password = %s" % self.sasl_password,
                 "sasl_mechanisms = %s" % self.mechanisms,
                 "destinations = main"]
        lines += ["%s = %s" % kv for kv in self.implicit_settings.items()]
        with open(self.config_path, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


def allows_root(program):
    help_text = subprocess.run([program, "--help"], capture_output=True,
                               text=True)
    return "--allow-root" in help_text.stdout + help_text.stderr


# -- raw csync clients ------------------------------------------------------

def read_banner(stream):
    """Lines up to "* OK" from a socket (plain or TLS); None at EOF."""
    data = b""
    while True:
        lines = data.split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if line.startswith(b"* OK"):
                return lines[:i + 1]
        chunk = stream.recv(4096)
        if not chunk:
            return None
        data += chunk


def send_line(stream, line):
    stream.sendall(line + b"\r\n")
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = stream.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data.rstrip(b"\r\n")


def plain_token(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


def starttls_client(port, certs, cert_name):
    """STARTTLS with the given client certificate (None: none): the TLS
    socket and the banner after the handshake (None: refused)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    banner = read_banner(raw)
    assert banner is not None and b"* STARTTLS" in banner, banner
    reply = send_line(raw, b"STARTTLS")
    assert reply == b"OK Begin TLS negotiation now", reply
    context = ssl.create_default_context(cafile=certs["ca"][1])
    context.check_hostname = False
    if cert_name is not None:
        context.load_cert_chain(certs[cert_name][1], certs[cert_name][0])
    try:
        stream = context.wrap_socket(raw)
        return stream, read_banner(stream)
    except (ssl.SSLError, ConnectionError) as e:
        raw.close()
        return None, str(e)


# -- the steps ----------------------------------------------------------------

def step_sync_client(lab, source, cluster, relays):
    for channel, users in (("cairn", STARTTLS_USERS),
                           ("implicit", IMPLICIT_USERS)):
        r = source.sync_client(users=users, channel=channel)
        expect(r.ok, "a: sync_client -u %s through channel %s (%.1fs)"
               % (" ".join(users), channel, r.seconds), r)
    log = cluster.router_log()
    expect("TLS established" in log and
           "client certificate CN=%s" % CLIENT_CN in log,
           "a: the router logged the handshakes and the Cyrus client "
           "certificate", log[-3000:])
    expect(log.count("COMPRESS DEFLATE active") >= 2,
           "a: sync_client switched COMPRESS on inside TLS on both channels",
           log[-3000:])
    expect("IMAP probe: closing" in log,
           "a: the implicit channel's IMAP probe (sync_try_imap) came over "
           "TLS and was closed, sync_client then spoke csync")
    # The STARTTLS channel: the plain part of each connection.
    recordings = relays["cairn"].recordings()
    expect(recordings, "a: the relay saw the STARTTLS channel's connections")
    for up, down in recordings:
        expect(b"STARTTLS\r\n" in up and
               b"OK Begin TLS negotiation now\r\n" in down,
               "a: STARTTLS in clear, answered OK Begin TLS negotiation now",
               repr(up[:200]) + repr(down[:300]))
        expect(b"* STARTTLS" in down and b"* SASL" not in down,
               "a: the clear banner offers STARTTLS and no SASL", down[:300])
        for word in (b"APPLY", b"AUTHENTICATE", b"GET ", b"MAILBOX"):
            expect(word not in up,
                   "a: no plaintext %s from sync_client on the STARTTLS "
                   "channel (%d bytes recorded)" % (word.decode(), len(up)))
        tail = up[up.index(b"STARTTLS\r\n") + 10:]
        expect(tail[:1] == b"\x16", "a: after STARTTLS the client sends a "
               "TLS handshake record", repr(tail[:20]))
    # The implicit channel: nothing readable at all.
    recordings = relays["implicit"].recordings()
    expect(recordings, "a: the relay saw the implicit channel's connections")
    for up, down in recordings:
        expect(up[:1] == b"\x16" and down[:1] == b"\x16",
               "a: implicit TLS: both directions start with a TLS "
               "handshake record", repr(up[:8]) + repr(down[:8]))
        for word in (b"APPLY", b"AUTHENTICATE", b"* OK", b"* SASL",
                     b"cairn-e2e"):
            expect(word not in up and word not in down,
                   "a: implicit TLS: no plaintext %s on the wire (%d+%d "
                   "bytes)" % (word.decode(), len(up), len(down)))
    users = STARTTLS_USERS + IMPLICIT_USERS
    r = cluster.cairnctl("verify", "-q", "-r", cluster.ring_file, *users)
    expect(r.returncode == 0, "a: cairnctl verify: every replica of %s "
           "verifies and agrees" % " ".join(users), r.stdout + r.stderr)
    compare_with_source(lab, source, cluster, users, "a")


def step_no_tls_client(cluster):
    stream = socket.create_connection(("127.0.0.1", cluster.csync_port),
                                      timeout=15)
    banner = read_banner(stream)
    expect(b"* STARTTLS" in banner and
           not any(line.startswith(b"* SASL") for line in banner) and
           not any(line.startswith(b"* COMPRESS") for line in banner),
           "b: require_tls: the clear banner is STARTTLS without SASL or "
           "COMPRESS", banner)
    reply = send_line(stream, b"AUTHENTICATE PLAIN " + plain_token(
        cluster.sasl_user, cluster.sasl_password))
    expect(reply.startswith(b"NO") and b"STARTTLS" in reply,
           "b: AUTHENTICATE in clear with the right password: %s"
           % reply.decode(), reply)
    reply = send_line(stream, b"APPLY RESERVE %(PARTITION default MBOXNAME "
                      b"(user.mallory) GUID ())")
    expect(reply.startswith(b"NO Please authenticate first"),
           "b: APPLY without a login: %s" % reply.decode(), reply)
    reply = send_line(stream, b"COMPRESS DEFLATE")
    expect(reply.startswith(b"NO"), "b: COMPRESS before TLS: %s"
           % reply.decode(), reply)
    stream.close()
    held = cluster.user_files()
    expect(not any("mallory" in u for users in held.values() for u in users),
           "b: nothing of mallory stored on any node")


def step_client_certificates(cluster, certs):
    port = cluster.csync_port
    stream, banner = starttls_client(port, certs, "client")
    expect(banner is not None and stream is not None and
           any(line.startswith(b"* SASL") for line in banner) and
           b"* STARTTLS" not in banner,
           "c: CN=%s: after the handshake a fresh banner with SASL"
           % CLIENT_CN, banner)
    reply = send_line(stream, b"AUTHENTICATE PLAIN " + plain_token(
        cluster.sasl_user, cluster.sasl_password))
    expect(reply.startswith(b"OK"), "c: CN=%s logs in over TLS: %s"
           % (CLIENT_CN, reply.decode()), reply)
    reply = send_line(stream, b"COMPRESS DEFLATE")
    expect(reply == b"OK DEFLATE active", "c: COMPRESS after TLS: %s"
           % reply.decode(), reply)
    stream.close()

    stream, banner = starttls_client(port, certs, "intruder")
    expect(banner is not None and stream is not None and
           not any(line.startswith(b"* SASL") for line in banner),
           "c: CN=intruder (same CA): a banner without SASL", banner)
    reply = send_line(stream, b"AUTHENTICATE PLAIN " + plain_token(
        cluster.sasl_user, cluster.sasl_password))
    expect(reply.startswith(b"NO") and b"certificate" in reply,
           "c: CN=intruder with the right password: %s" % reply.decode(),
           reply)
    stream.close()

    for name in ("rogue", None):
        stream, banner = starttls_client(port, certs, name)
        expect(stream is None or banner is None,
               "c: %s: the handshake fails (%s)"
               % ("CN=%s of another CA" % CLIENT_CN if name else
                  "no client certificate", banner))
        if stream is not None:
            stream.close()
    expect("certificate verify failed" in cluster.router_log() or
           "peer did not return a certificate" in cluster.router_log(),
           "c: the router logged why the handshake failed",
           cluster.router_log()[-2000:])

    # The implicit channel: TLS from the first byte, SASL in its banner.
    context = ssl.create_default_context(cafile=certs["ca"][1])
    context.check_hostname = False
    with context.wrap_socket(socket.create_connection(
            ("127.0.0.1", cluster.implicit_port), timeout=15)) as stream:
        banner = read_banner(stream)
    expect(banner and any(line.startswith(b"* SASL") for line in banner)
           and b"* STARTTLS" not in banner,
           "c: implicit channel: the banner comes over TLS, with SASL",
           banner)


def restore(cluster, replica, password_file, user, ca_file):
    host, port = replica.csync_address
    return cluster.cairnctl(
        "restore", "--user", user, "--server", "%s:%d" % (host, port),
        "--authname", cyruslab.REPLICATION_USER, "--password-file",
        password_file, "--starttls", "--ca-file", ca_file, "--timeout", "30",
        timeout=120)


def step_restore(lab, source, cluster, replica, certs):
    password_file = os.path.join(lab.dir, "restore.pw")
    with open(password_file, "w") as f:
        f.write(cyruslab.REPLICATION_PASSWORD + "\n")
    os.chmod(password_file, 0o600)
    r = restore(cluster, replica, password_file, "bob", certs["rogue-ca"][1])
    expect(r.returncode != 0 and "failed the check against --ca-file" in
           r.stderr and "unable to get local issuer certificate" in r.stderr,
           "d: restore with the wrong CA fails: %s" % r.stderr.strip()
           .splitlines()[-1], r.stdout + r.stderr)
    expect(not [n for n in replica.mailbox_names() if "bob" in n],
           "d: nothing of bob restored")
    r = restore(cluster, replica, password_file, "alice", certs["ca"][1])
    expect(r.returncode == 0 and "certificate verified" in r.stderr and
           "TLSv1" in r.stderr, "d: cairnctl restore --starttls --ca-file "
           "into a TLS sync_server", r.stdout + r.stderr)
    want, got = source.snapshot(users=["alice"]), replica.snapshot(
        users=["alice"])
    expect(want and got == want, "d: alice's %d mailboxes restored over TLS "
           "equal the source's (UIDs, GUIDs, flags, modseqs)" % len(want),
           "source %r\nreplica %r" % (want, got))
    own = [{k: v for k, v in contents(server, "alice").items()
            if k.startswith("INBOX")} for server in (source, replica)]
    expect(own[0] == own[1], "d: and their bytes and internaldates (%d "
           "messages)" % sum(len(v) for v in own[0].values()))


def step_bad_certificate_path(cluster, binaries):
    bad = os.path.join(cluster.dir, "bad.conf")
    with open(cluster.config_path) as f:
        text = f.read()
    missing = os.path.join(cluster.dir, "no-such-cert.pem")
    text = text.replace("tls_cert = ", "tls_cert = %s\n# was: " % missing, 1)
    for port in (cluster.csync_port, cluster.implicit_port):
        text = text.replace("127.0.0.1:%d\n" % port,
                            "127.0.0.1:%d\n" % cairncluster.free_port())
    text = text.replace("control = tcp://127.0.0.1:%d" % cluster.control_port,
                        "control = tcp://127.0.0.1:%d"
                        % cairncluster.free_port())
    with open(bad, "w") as f:
        f.write(text)
    argv = [binaries.router, "-c", bad]
    if allows_root(binaries.router):
        argv.insert(1, "--allow-root")
    r = subprocess.run(argv, capture_output=True,
                       text=True, timeout=30)
    expect(r.returncode != 0 and missing in r.stdout + r.stderr and
           "tls_cert" in r.stdout + r.stderr,
           "e: a missing tls_cert stops the router, naming the file",
           r.stdout + r.stderr)


def peer_common_name(port, certs):
    """The CN of the certificate the implicit channel shows now."""
    context = ssl.create_default_context(cafile=certs["ca"][1])
    context.check_hostname = False
    with context.wrap_socket(socket.create_connection(
            ("127.0.0.1", port), timeout=15)) as stream:
        subject = dict(item[0] for item in stream.getpeercert()["subject"])
    return subject.get("commonName")


def step_reload_certificate(cluster, certs, pki):
    before = peer_common_name(cluster.implicit_port, certs)
    key, cert = make_cert(pki, "renewed", "renewed.cairn.test", certs["ca"],
                          "IP:127.0.0.1")
    shutil.copyfile(key, certs["server"][0])
    shutil.copyfile(cert, certs["server"][1])
    offset = len(cluster.router_log())
    cluster.daemons["router"].signal(signal.SIGHUP)
    cluster.wait_router_log(r"SIGHUP: configuration reloaded", offset)
    after = peer_common_name(cluster.implicit_port, certs)
    expect(before == "127.0.0.1" and after == "renewed.cairn.test",
           "f: SIGHUP loads the renewed certificate (CN %s, then %s)"
           % (before, after))


def main():
    cyruslab.skip_unless_runnable()
    binaries, _ = cairncluster.binaries_from_argv()
    if binaries.missing():
        print("cairn programs not built: %s" % binaries.missing())
        return 1
    pki = tempfile.mkdtemp(prefix="cairn-tls-pki-")
    relays = {}
    try:
        certs = make_pki(pki)
        tls = {"tls_cert": certs["server"][1], "tls_key": certs["server"][0]}
        with TlsCluster(binaries, dict(tls, tls_mode="implicit"), nodes=2,
                        replicas=2, mechanisms="PLAIN",
                        channel_settings=dict(
                            tls, require_tls="yes",
                            tls_client_ca=certs["ca"][1],
                            tls_client_subject=CLIENT_CN)) as cluster, \
                cyruslab.Lab() as lab:
            cluster.start()
            relays["cairn"] = Relay(cluster.csync_port)
            relays["implicit"] = Relay(cluster.implicit_port)
            implicit_host = "127.0.0.1:%d/tls" % relays["implicit"].port
            source = lab.add_source(
                channels={"cairn": ("127.0.0.1", relays["cairn"].port),
                          "implicit": (implicit_host,
                                       relays["implicit"].port)},
                extra_config={"tls_client_cert": certs["client"][1],
                              "tls_client_key": certs["client"][0],
                              # Cyrus's default: the IMAP probe first
                              # (over TLS too, with /tls)
                              "implicit_sync_try_imap": "1"})
            replica = lab.add_replica(extra_config={
                "tls_server_cert": certs["server"][1],
                "tls_server_key": certs["server"][0]})
            lab.start()
            labmail.populate(source, STARTTLS_USERS + IMPLICIT_USERS,
                             messages=4)
            step_sync_client(lab, source, cluster, relays)
            step_no_tls_client(cluster)
            step_client_certificates(cluster, certs)
            step_restore(lab, source, cluster, replica, certs)
            step_bad_certificate_path(cluster, binaries)
            step_reload_certificate(cluster, certs, pki)
            # Every SSL of every connection above is freed on close: under
            # ASan a leak or an error makes the router exit non-zero.
            status = cluster.stop().get("router")
            expect(status == 0, "the router stops cleanly after all the "
                   "TLS connections (exit %s)" % status, cluster.router_log()
                   [-3000:])
    finally:
        for relay in relays.values():
            relay.close()
        shutil.rmtree(pki, ignore_errors=True)
    print("test_tls: passed in %.1fs" % (time.monotonic() - STARTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
