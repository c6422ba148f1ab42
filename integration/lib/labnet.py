"""labnet -- a network namespace of the test's own, joined to the host by a
veth pair, to cut a node off or slow its link down without touching any
other address.

    with labnet.Link() as link:           # raises LinkUnavailable
        wrapper = link.wrapper()          # ["ip", "netns", "exec", NS]
        host = link.inside                # the namespace's address
        link.cut()                        # its end of the veth goes down
        link.restore()                    # ... up again
        link.limit("40mbit")              # tbf on both ends: a slow link

    with labnet.Bridge(["router", "node1"]) as bed:   # a test bed of hosts
        bed.address["node1"]              # its namespace's address
        bed.wrapper("node1")              # ["ip", "netns", "exec", NS]

The pair's addresses are a /30 of 198.18.0.0/15 (RFC 2544, benchmarking)
that no interface on this host uses yet.  The namespace and the veth are
removed at exit (a failing removal is reported, never hidden).  A cut
link keeps the TCP connections through it open: the peer neither hears a
FIN nor a RST, like a cable pulled or a firewall dropping packets.
Python 3 standard library only; needs root and iproute2.
"""
import os
import subprocess

__all__ = ["Bridge", "Link", "LinkUnavailable"]


class LinkUnavailable(Exception):
    """Network namespaces (or veth) cannot be made here."""


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True,
                       timeout=30)
    if check and r.returncode != 0:
        raise LinkUnavailable("ip %s: %s" % (" ".join(args),
                                             r.stderr.strip()))
    return r


def _tc(*args):
    r = subprocess.run(["tc"] + list(args), capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise LinkUnavailable("tc %s: %s" % (" ".join(args),
                                             r.stderr.strip()))


def _remove(links, namespaces):
    """Deletes links (veth ends, bridges) and namespaces; a failure is
    reported after trying them all, never hidden."""
    problems = []
    for link in links:
        r = _ip("link", "del", link, check=False)
        if r.returncode != 0 and "Cannot find" not in r.stderr:
            problems.append(r.stderr.strip())
    for namespace in namespaces:
        r = _ip("netns", "del", namespace, check=False)
        if r.returncode != 0:
            problems.append(r.stderr.strip())
    if problems:
        raise LinkUnavailable("cleanup: %s" % "; ".join(problems))


def _free_subnet():
    """A 198.18.N.M/30 no interface has."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for n in range(1, 250):
        third = (os.getpid() + n) % 250 + 1
        prefix = "198.18.%d." % third
        if prefix not in used:
            return prefix
    raise LinkUnavailable("no free 198.18.x.0/30")


class Link:
    """A namespace and a veth pair; inside/outside are the two addresses."""

    def __init__(self):
        tag = "%d" % (os.getpid() % 100000)
        self.namespace = "cairn-lab-%s" % tag
        self.host_end = "cl%sh" % tag
        self.node_end = "cl%sn" % tag
        self._made = []
        try:
            prefix = _free_subnet()
            self.outside, self.inside = prefix + "1", prefix + "2"
            _ip("netns", "add", self.namespace)
            self._made.append("netns")
            _ip("link", "add", self.host_end, "type", "veth", "peer", "name",
                self.node_end)
            self._made.append("veth")
            _ip("link", "set", self.node_end, "netns", self.namespace)
            _ip("addr", "add", self.outside + "/30", "dev", self.host_end)
            _ip("link", "set", self.host_end, "up")
            self._inside("ip", "addr", "add", self.inside + "/30", "dev",
                         self.node_end)
            self._inside("ip", "link", "set", self.node_end, "up")
            self._inside("ip", "link", "set", "lo", "up")
        except (LinkUnavailable, OSError, subprocess.SubprocessError) as e:
            self.close()
            raise LinkUnavailable(str(e))

    def _inside(self, *argv):
        r = subprocess.run(["ip", "netns", "exec", self.namespace] +
                           list(argv), capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise LinkUnavailable("%s in %s: %s" % (" ".join(argv),
                                                     self.namespace,
                                                     r.stderr.strip()))

    def wrapper(self):
        """The argv prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.namespace]

    def cut(self):
        """Drop everything, connections stay open: the namespace's end goes
        down, so the host end loses its carrier but keeps its route (the
        host's packets for `inside` are dropped at the veth, never sent
        along another route)."""
        self._inside("ip", "link", "set", self.node_end, "down")

    def restore(self):
        self._inside("ip", "link", "set", self.node_end, "up")

    def limit(self, rate, latency="100ms"):
        """A slow but working link: token bucket at rate both ways."""
        _tc("qdisc", "replace", "dev", self.host_end, "root", "tbf", "rate",
            rate, "burst", "32kbit", "latency", latency)
        self._inside("tc", "qdisc", "replace", "dev", self.node_end, "root",
                     "tbf", "rate", rate, "burst", "32kbit", "latency",
                     latency)

    def unlimit(self):
        subprocess.run(["tc", "qdisc", "del", "dev", self.host_end, "root"],
                       capture_output=True, timeout=30)

    def close(self):
        veths = [self.host_end] if "veth" in self._made else []
        namespaces = [self.namespace] if "netns" in self._made else []
        self._made = []
        _remove(veths, namespaces)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


class Bridge:
    """Several hosts on one private network: a Linux bridge on this host
    (address .1 of a free 198.18.N.0/24) and, per name, a namespace whose
    veth joins the bridge with address .2, .3, ...  The namespaces reach
    each other and this host over the bridge; nothing of theirs is on
    127.0.0.1.  Removed at exit (a failing removal is reported)."""

    def __init__(self, names):
        tag = "%d" % (os.getpid() % 100000)
        self.bridge = "cb%s" % tag
        self.namespaces, self.address, self._veths = {}, {}, []
        self._bridge_made = False
        try:
            prefix = _free_subnet()
            self.outside = prefix + "1"
            _ip("link", "add", self.bridge, "type", "bridge")
            self._bridge_made = True
            _ip("addr", "add", self.outside + "/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(names):
                namespace = "cairn-bed-%s-%d" % (tag, i)
                host_end, inner = "cb%sh%d" % (tag, i), "cb%sn%d" % (tag, i)
                _ip("netns", "add", namespace)
                self.namespaces[name] = namespace
                _ip("link", "add", host_end, "type", "veth", "peer", "name",
                    inner)
                self._veths.append(host_end)
                _ip("link", "set", inner, "netns", namespace)
                _ip("link", "set", host_end, "master", self.bridge)
                _ip("link", "set", host_end, "up")
                address = prefix + "%d" % (i + 2)
                self._inside(name, "ip", "addr", "add", address + "/24",
                             "dev", inner)
                self._inside(name, "ip", "link", "set", inner, "up")
                self._inside(name, "ip", "link", "set", "lo", "up")
                self.address[name] = address
        except (LinkUnavailable, OSError, subprocess.SubprocessError) as e:
            self.close()
            raise LinkUnavailable(str(e))

    def _inside(self, name, *argv):
        r = subprocess.run(self.wrapper(name) + list(argv),
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise LinkUnavailable("%s in %s: %s" % (
                " ".join(argv), self.namespaces[name], r.stderr.strip()))

    def wrapper(self, name):
        """The argv prefix that runs a program on host name."""
        return ["ip", "netns", "exec", self.namespaces[name]]

    def close(self):
        veths, namespaces = self._veths, list(self.namespaces.values())
        bridge = [self.bridge] if self._bridge_made else []
        self._veths, self.namespaces, self._bridge_made = [], {}, False
        _remove(veths + bridge, namespaces)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False
