"""Real services for tests and the demo: a private dbus-daemon, libvirtd, a dir pool.

Plain functions and context managers (no pytest here), so ``scripts/demo.py``
can use them too.  Everything is stopped by the PID this module started it
with, never by process name: the machine may run other people's libvirtd.

Processes started here stay running for a whole test session; their PIDs are
kept in ``service_pids()`` so the process-leak check of the test suite can
tell them from leaked children.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import libvirt

from testbed.bus import PrivateBus
from testbed.processes import (
    child_pids,
    describe_pids,
    forget_service,
    pid_alive,
    register_service,
    service_pids,
    stop_process,
    tail,
)

__all__ = [
    "DEFAULT_URI",
    "SESSION_TOKEN",
    "TEST_PREFIX",
    "DefinedNetwork",
    "DirPool",
    "LibvirtdGuard",
    "LiveConnection",
    "PrivateBus",
    "child_pids",
    "describe_pids",
    "domain_macs",
    "ensure_libvirtd",
    "leftover_test_domains",
    "leftover_test_pools",
    "libvirt_answers",
    "pid_alive",
    "remove_domain",
    "service_pids",
    "unique_name",
]

DEFAULT_URI = "qemu:///system"
TEST_PREFIX = "vm2kvm-test-"
# One token per Python process: names made here carry it, so the end-of-session
# safety net only touches objects this process created, not those of a test run
# going on in parallel against the same libvirtd.
SESSION_TOKEN = secrets.token_hex(3)


def unique_name(kind: str = "") -> str:
    """``vm2kvm-test-<session token>-[kind-]<random>``: a name no other run uses."""
    middle = f"{kind}-" if kind else ""
    return f"{TEST_PREFIX}{SESSION_TOKEN}-{middle}{secrets.token_hex(3)}"


def _quiet_libvirt() -> None:
    # libvirt's default handler prints every error (including "no such domain"
    # from an existence probe) to stderr.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


# --- libvirtd ---------------------------------------------------------------


def libvirt_answers(uri: str = DEFAULT_URI) -> bool:
    _quiet_libvirt()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getLibVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _unix_socket_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


@dataclass
class LibvirtdGuard:
    """What ``ensure_libvirtd`` did; ``stop()`` ends only the processes it started."""

    uri: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    startup_seconds: float = 0.0
    log_dir: Path | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.started]

    def stop(self) -> None:
        # libvirtd first: it may still write to virtlogd while shutting down.
        while self.started:
            stop_process(self.started.pop(), timeout=15)
        # Their logs matter only in the errors raised while starting them (which quote them).
        if self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None

    def __enter__(self) -> LibvirtdGuard:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def ensure_libvirtd(uri: str = DEFAULT_URI, *, timeout: float = 60.0) -> LibvirtdGuard:
    """Use the libvirtd that answers on ``uri``, or start virtlogd + libvirtd.

    Without systemd nothing starts them for us.  Both run in the foreground as
    our children (no ``-d``), so we hold their real PIDs.  Stale pid files and
    sockets left by a killed run do not matter: libvirt locks its pid files
    (a stale file is not locked) and unlinks a stale socket before binding.
    """
    guard = LibvirtdGuard(uri)
    if libvirt_answers(uri):
        return guard
    begin = time.monotonic()
    for directory in ("/var/log/libvirt", "/run/libvirt"):
        os.makedirs(directory, exist_ok=True)
    guard.log_dir = Path(tempfile.mkdtemp(prefix="vm2kvm-libvirtd-"))

    def spawn(argv: list[str], log: str) -> subprocess.Popen[bytes]:
        assert guard.log_dir is not None
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(guard.log_dir / log).open("wb"),
            start_new_session=True,  # a Ctrl-C in the terminal is for us, not for them
        )
        register_service(proc.pid)
        guard.started.append(proc)
        return proc

    try:
        if not _unix_socket_answers("/run/libvirt/virtlogd-sock"):
            spawn(["virtlogd"], "virtlogd.log")
        daemon = spawn(["libvirtd"], "libvirtd.log")
        deadline = begin + timeout
        while not libvirt_answers(uri):
            if daemon.poll() is not None:
                # Someone else's libvirtd may have won the race for the socket.
                if libvirt_answers(uri):
                    break
                raise RuntimeError(
                    f"libvirtd exited with status {daemon.returncode}: {tail(guard.log_dir / 'libvirtd.log')}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"libvirtd did not answer on {uri} within {timeout:.0f} s: "
                    f"{tail(guard.log_dir / 'libvirtd.log')}"
                )
            time.sleep(0.05)
    except BaseException:
        guard.stop()
        raise
    # libvirtd answers before its QEMU driver has probed the emulator's
    # capabilities (about 4 s with an empty cache); the first real call waits
    # for that, so count it as part of the start.
    _quiet_libvirt()
    conn = libvirt.open(uri)
    try:
        conn.getDomainCapabilities()
    finally:
        conn.close()
    # A libvirtd of ours that lost the race has exited; drop it from the list.
    for proc in list(guard.started):
        if proc.poll() is not None:
            guard.started.remove(proc)
            forget_service(proc.pid)
    guard.startup_seconds = time.monotonic() - begin
    return guard


# --- storage pools and networks ---------------------------------------------


def _open(conn_or_uri: Any) -> tuple[Any, bool]:
    if isinstance(conn_or_uri, str):
        _quiet_libvirt()
        return libvirt.open(conn_or_uri), True
    return conn_or_uri, False


class DirPool:
    """A running libvirt ``dir`` pool in a fresh temp directory, removed on exit.

    On exit, volumes still in the pool are deleted, the pool is destroyed and
    undefined, and the directory removed.  ``leftover_volumes`` records what
    had to be deleted, for tests that care.
    """

    def __init__(
        self,
        conn_or_uri: Any = DEFAULT_URI,
        *,
        name: str | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._conn_or_uri = conn_or_uri
        self.name = name or unique_name("pool")
        self._parent_dir = parent_dir
        self.path: Path = Path()
        self.pool: Any = None
        self.leftover_volumes: list[str] = []
        self._conn: Any = None
        self._own_conn = False

    def start(self) -> DirPool:
        self._conn, self._own_conn = _open(self._conn_or_uri)
        self.path = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self._parent_dir))
        xml = (
            f"<pool type='dir'><name>{escape(self.name)}</name>"
            f"<target><path>{escape(str(self.path))}</path></target></pool>"
        )
        try:
            self.pool = self._conn.storagePoolDefineXML(xml, 0)
            self.pool.build(0)
            self.pool.create(0)
        except BaseException:
            self.stop()
            raise
        return self

    def volume_names(self) -> list[str]:
        self.pool.refresh(0)
        return sorted(str(n) for n in self.pool.listVolumes())

    def stop(self) -> None:
        if self.pool is not None:
            try:
                if self.pool.isActive():
                    with contextlib.suppress(libvirt.libvirtError):
                        self.pool.refresh(0)
                    for vol in self.pool.listAllVolumes(0):
                        self.leftover_volumes.append(str(vol.name()))
                        with contextlib.suppress(libvirt.libvirtError):
                            vol.delete(0)
                    self.pool.destroy()
                self.pool.undefine()
            except libvirt.libvirtError:
                pass
            self.pool = None
        if self.path != Path() and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        if self._own_conn and self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
        self._conn = None

    def __enter__(self) -> DirPool:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


class DefinedNetwork:
    """A persistent, inactive libvirt network (defined, never started).

    Defining a domain only needs its networks to exist; starting one would need
    a bridge and dnsmasq, which tests that only define domains do not.
    """

    def __init__(self, conn_or_uri: Any = DEFAULT_URI, *, name: str | None = None) -> None:
        self._conn_or_uri = conn_or_uri
        self.name = name or unique_name("net")
        self.network: Any = None
        self._conn: Any = None
        self._own_conn = False

    def start(self) -> DefinedNetwork:
        self._conn, self._own_conn = _open(self._conn_or_uri)
        # Bridge names are limited to 15 characters.
        bridge = "v2kt" + secrets.token_hex(4)
        xml = f"<network><name>{escape(self.name)}</name><bridge name={quoteattr(bridge)}/></network>"
        self.network = self._conn.networkDefineXML(xml)
        return self

    def stop(self) -> None:
        if self.network is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self.network.undefine()
            self.network = None
        if self._own_conn and self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
        self._conn = None

    def __enter__(self) -> DefinedNetwork:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


# --- leftovers ---------------------------------------------------------------


def leftover_test_domains(conn: Any, token: str = SESSION_TOKEN) -> list[str]:
    """Names of defined domains made by this test session (``vm2kvm-test-<token>-*``)."""
    prefix = f"{TEST_PREFIX}{token}-"
    return sorted(str(d.name()) for d in conn.listAllDomains(0) if str(d.name()).startswith(prefix))


def leftover_test_pools(conn: Any, token: str = SESSION_TOKEN) -> list[str]:
    prefix = f"{TEST_PREFIX}{token}-"
    return sorted(str(p.name()) for p in conn.listAllStoragePools(0) if str(p.name()).startswith(prefix))


def remove_domain(conn: Any, name: str) -> None:
    """Destroy (if running) and undefine ``name``, NVRAM included."""
    dom = conn.lookupByName(name)
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def domain_macs(conn: Any, name: str) -> list[str]:
    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    return [str(m.get("address")) for m in root.iterfind("devices/interface/mac")]


class LiveConnection:
    """A libvirt connection that outlives its libvirtd.

    On a shared machine the libvirtd we found may be stopped by whoever started
    it while our tests run.  Every attribute access checks the connection; a
    dead one is replaced, starting a libvirtd of our own if none answers.
    ``stop()`` closes the connection and stops only the libvirtds started here.
    """

    def __init__(self, uri: str = DEFAULT_URI, guard: LibvirtdGuard | None = None) -> None:
        self._uri = uri
        self._guards: list[LibvirtdGuard] = [guard] if guard else []
        self._conn: Any = None
        self.reconnects = 0

    @property
    def guards(self) -> list[LibvirtdGuard]:
        return list(self._guards)

    def current(self) -> Any:
        if self._conn is not None:
            # isAlive() only reports what the client noticed; a round trip is
            # sure (and takes well under a millisecond).
            try:
                self._conn.getLibVersion()
                return self._conn
            except libvirt.libvirtError:
                pass
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None
            self.reconnects += 1
        if not libvirt_answers(self._uri):
            self._guards.append(ensure_libvirtd(self._uri))
        _quiet_libvirt()
        self._conn = libvirt.open(self._uri)
        return self._conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)

    def stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None
        while self._guards:
            self._guards.pop().stop()
