"""Two "hosts" on one machine: two Linux network namespaces joined by a veth pair (root only).

A process started with :meth:`TwoHosts.prefix` of a host sees only that namespace's loopback and
its end of the veth, so DDS between the two hosts crosses the veth as it would cross a cable.
Each host also gets its own ``/dev/shm`` and ``/etc/machine-id`` (bind mounts in the mount
namespace ``ip netns exec`` makes): Fast DDS recognises "the same host" by the machine id and
then talks through shared memory, which a veth cannot cut. So, as on two real machines,
processes on one host use shared memory among themselves and UDP (large samples as IP
fragments) to the other host; children a prefixed process starts inherit its host. :meth:`TwoHosts.set_link` takes the robot's end down and up (a
pulled cable). Recipe measured in ../shared/facts/multi_host_dds.md.

Cleanup is unconditional: :meth:`close` (also on ``with`` exit, and after a failed set-up)
kills whatever still runs in the two namespaces (only processes this run started can be
there) and deletes them, which deletes the veth pair. Nothing here touches any other
interface or namespace; DDS traffic stays inside the pair.

What namespaces do not model (README "Two hosts"): a veth has no bandwidth limit, loss, jitter
or reordering (and ``tc netem`` is not available here to add them), and both hosts share one
clock and one CPU.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Dict, List, Optional

HOSTS = ("robot", "gpu")
SUBNET = "10.77.0"
ADDRESSES = {"robot": f"{SUBNET}.1", "gpu": f"{SUBNET}.2"}


def unavailable_reason() -> Optional[str]:
    """Why two namespaces cannot be made here (None when they can)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=20)


class TwoHosts:
    """The 'robot' and 'gpu' namespaces and the veth between them.

    Parameters
    ----------
    tag : str, optional
        Makes the names unique (default: this process id): namespaces ``s2r<tag>robot`` /
        ``s2r<tag>gpu``, veth ends ``s2r<tag>r`` / ``s2r<tag>g`` (interface names <= 15 chars).
    create : bool
        False: attach to namespaces another process made (to cut the link from inside one);
        :meth:`close` then leaves them alone.
    """

    def __init__(self, tag: Optional[str] = None, create: bool = True) -> None:
        tag = str(os.getpid() if tag is None else tag)
        self.tag = tag
        self.namespaces = {host: f"s2r{tag}{host}" for host in HOSTS}
        self.veth = {"robot": f"s2r{tag}r", "gpu": f"s2r{tag}g"}
        if any(len(name) > 15 for name in self.veth.values()):
            raise ValueError(f"tag {tag!r} too long for interface names")
        self._owner = create
        self._made: List[str] = []
        self._mounted: List[str] = []
        if create:
            reason = unavailable_reason()
            if reason:
                raise RuntimeError(reason)
            try:
                self._create()
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> "TwoHosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def folder(self) -> str:
        """Per-host private files: ``<folder>/<host>/shm`` (its /dev/shm), ``<folder>/<host>/machine-id``."""
        return f"/tmp/s2r{self.tag}-hosts"

    def _create(self) -> None:
        for host in HOSTS:
            shm = os.path.join(self.folder, host, "shm")
            os.makedirs(shm, mode=0o1777, exist_ok=True)
            # A tmpfs, like a real /dev/shm (Fast DDS maps its segments there; on disk they would
            # be written back).
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=1777", f"s2r{self.tag}{host}shm", shm],
                           check=True, capture_output=True, timeout=20)
            self._mounted.append(shm)
            with open(os.path.join(self.folder, host, "machine-id"), "w", encoding="ascii") as stream:
                stream.write(os.urandom(16).hex() + "\n")
        for host in HOSTS:
            _ip("netns", "add", self.namespaces[host])
            self._made.append(self.namespaces[host])
        _ip("link", "add", self.veth["robot"], "netns", self.namespaces["robot"], "type", "veth",
            "peer", "name", self.veth["gpu"], "netns", self.namespaces["gpu"])
        for host in HOSTS:
            ns = self.namespaces[host]
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ADDRESSES[host]}/24", "dev", self.veth[host])
            _ip("-n", ns, "link", "set", self.veth[host], "up")
            self._multicast_route(host)

    def _multicast_route(self, host: str) -> None:
        # DDS discovery is multicast: without a route the SPDP announcements have nowhere to go.
        _ip("-n", self.namespaces[host], "route", "replace", "224.0.0.0/4", "dev", self.veth[host])

    def prefix(self, host: str) -> List[str]:
        """The command prefix that runs a program on ``host`` (its network, /dev/shm and machine id)."""
        script = 'mount --bind "$0/shm" /dev/shm && mount --bind "$0/machine-id" /etc/machine-id && exec "$@"'
        return ["ip", "netns", "exec", self.namespaces[host], "sh", "-c", script, os.path.join(self.folder, host)]

    @staticmethod
    def environment(domain_id: int, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Environment for ROS processes on either host: discovery beyond localhost."""
        env = dict(os.environ)
        env.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_DOMAIN_ID": str(domain_id),
                    "PYTHONUNBUFFERED": "1"})
        env.update(extra or {})
        return env

    def set_link(self, up: bool) -> None:
        """Take the robot's end of the veth down (a pulled cable: both directions stop) or up."""
        _ip("-n", self.namespaces["robot"], "link", "set", self.veth["robot"], "up" if up else "down")
        if up:
            # A link taken down loses its routes; the connected one comes back by itself, the
            # multicast one must be added again. The gpu end kept its (it only lost carrier).
            self._multicast_route("robot")

    def link_up(self) -> bool:
        out = _ip("-n", self.namespaces["robot"], "link", "show", self.veth["robot"]).stdout
        return "state UP" in out or ",UP" in out.split(">")[0]

    def close(self) -> None:
        """Kill what still runs in the namespaces (this run's processes) and delete them."""
        if not self._owner:
            return
        for namespace in list(self._made):
            pids = _ip("netns", "pids", namespace, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", namespace, check=False)
            self._made.remove(namespace)
        for mount in list(self._mounted):  # after the processes that used it are gone
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True, timeout=20)
            self._mounted.remove(mount)
        shutil.rmtree(self.folder, ignore_errors=True)

    @classmethod
    def remove(cls, tag: str) -> None:
        """Remove whatever a run with ``tag`` left (its owner was killed before its own cleanup)."""
        hosts = cls(tag, create=False)
        hosts._owner = True
        hosts._made = [name for name in hosts.namespaces.values() if name in cls.leftovers(tag)]
        hosts._mounted = [os.path.join(hosts.folder, host, "shm") for host in HOSTS
                          if os.path.ismount(os.path.join(hosts.folder, host, "shm"))]
        hosts.close()

    @staticmethod
    def leftovers(tag: str) -> List[str]:
        """Namespaces (and the host folder) of ``tag`` that still exist (for tests that check the cleanup)."""
        listing = _ip("netns", "list", check=False).stdout
        found = [line.split()[0] for line in listing.splitlines() if line.startswith(f"s2r{tag}")]
        return found + ([f"/tmp/s2r{tag}-hosts"] if os.path.exists(f"/tmp/s2r{tag}-hosts") else [])
