"""The libvirt host a migration writes to: pools, volumes, networks, domains.

Thin and blocking on purpose: every method is one or two libvirt calls, and
callers in the event loop run them with ``asyncio.to_thread``.  Every
``libvirt.libvirtError`` leaves this module as a ``Vm2kvmError``: a specific
code where the caller can act on it (``PoolNotFound``, ``VolumeExists``),
otherwise ``LibvirtError`` carrying libvirt's own message.

The one connection holder of the daemon: every libvirt call goes through
``LibvirtHost.call``.  A connection whose libvirtd went away (restarted by a
package upgrade, crashed) fails every call with an error of libvirt's RPC
layer (``VIR_FROM_RPC``: "Cannot write data: Broken pipe", "client socket is
closed") and ``isAlive()`` turns false; libvirt's close callback would say
the same but only with an event loop registered, which the daemon does not
run.  Then the holder drops the connection and opens a new one, backing off
from 0.5 s to 10 s between attempts, for up to ``patience`` seconds (the
daemon's ``libvirt_retry_seconds``; 0 for ``Migrate``'s own checks, which
answer at once), and repeats the call.  Lookups, reads, refreshes and
deletions are repeated whatever happened; a call that creates something
(volume, domain) is repeated only when the connection was found dead before
it was sent, never when libvirtd went away while it ran (whether it was done
is then unknown).  Past the bound: ``LibvirtUnavailable``.  The wait is
written to the job's log ("libvirtd at URI not reachable since 20:31:05,
retrying for up to 120 s").
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from xml.sax.saxutils import escape

import libvirt

from vm2kvmd.errors import ErrorCode, Vm2kvmError

# Pool types whose volumes are files qemu-img can write as qcow2 or raw.
FILE_POOL_TYPES = ("dir", "fs", "netfs")
# Pool types whose volumes are block devices (LVM logical volumes): raw only, fully
# allocated, and not zeroed when created.
BLOCK_POOL_TYPES = ("logical",)

# Between attempts to reach a libvirtd that went away: doubling from the first to the last.
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 10.0
# While waiting, the job's log hears again this often (the first line says since when).
RETRY_LOG_EVERY = 30.0

_T = TypeVar("_T")

_handler_lock = threading.Lock()
_handler_registered = False


def _silence_libvirt() -> None:
    """Replace libvirt's default error handler, which prints every error to stderr.

    The handler is process-global; errors still reach us as exceptions.
    """
    global _handler_registered
    with _handler_lock:
        if not _handler_registered:
            libvirt.registerErrorHandler(_ignore_error, None)
            _handler_registered = True


def _ignore_error(_ctx: object, _err: object) -> None:
    return None


@dataclass(frozen=True)
class PoolInfo:
    name: str
    type: str  # dir, fs, netfs, logical, ...
    path: str  # <target><path>
    available: int  # bytes free, as libvirt last saw it (refresh first)

    @property
    def block(self) -> bool:
        """Its volumes are block devices (``BLOCK_POOL_TYPES``)."""
        return self.type in BLOCK_POOL_TYPES

    @property
    def usable(self) -> bool:
        """vm2kvm can write its volumes: a file pool with a directory, or a block pool."""
        return bool(self.path) and (self.type in FILE_POOL_TYPES or self.block)


def _message(err: libvirt.libvirtError) -> str:
    return str(err.get_error_message() or err)


class LibvirtHost:
    """A lazily opened connection to one libvirt URI that reconnects; see the module docstring.

    ``patience``: seconds to wait for a libvirtd that is not reachable before
    ``LibvirtUnavailable`` (0: fail at once).  ``log``: where the wait is
    told (the job's log; thread-safe).
    """

    def __init__(self, uri: str, *, patience: float = 0.0, log: Callable[[str], None] | None = None) -> None:
        _silence_libvirt()
        self.uri = uri
        self.patience = patience
        self.log = log
        self._conn: Any = None
        self._lock = threading.RLock()
        self._down_since: float | None = None  # wall-clock time libvirtd was first found away
        self._gave_up = False  # waited the whole bound once: later calls try once, no more waiting

    # --- connection -------------------------------------------------------

    def connection(self) -> Any:
        """The ``virConnect``, opened on first use or after a lost one (blocking; may wait ``patience``)."""
        with self._lock:
            if self._conn is not None:
                return self._conn
            delay = RETRY_FIRST_DELAY
            last_told = 0.0
            while True:
                try:
                    conn = libvirt.open(self.uri)
                except libvirt.libvirtError as err:
                    if err.get_error_domain() != libvirt.VIR_FROM_RPC:
                        # Not libvirtd away but a URI or driver libvirt refuses: waiting cannot help.
                        raise Vm2kvmError(
                            ErrorCode.LIBVIRT_ERROR,
                            f"cannot connect to libvirt at {self.uri}: {_message(err)}",
                            value=self.uri,
                        ) from err
                    now = time.time()
                    since = self._down_since = self._down_since or now
                    waited = now - since
                    if self._gave_up or waited + delay > self.patience:
                        self._gave_up = self.patience > 0
                        raise self._unavailable(err, waited) from err
                    if now - last_told >= RETRY_LOG_EVERY:
                        self._tell(
                            f"libvirtd at {self.uri} not reachable since {_clock(since)} "
                            f"({_message(err)}), retrying for up to {self.patience:g} s"
                        )
                        last_told = now
                    time.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_DELAY)
                    continue
                if self._down_since is not None:
                    self._tell(
                        f"libvirtd at {self.uri} reachable again after "
                        f"{time.time() - self._down_since:.0f} s (down since {_clock(self._down_since)})"
                    )
                self._conn, self._down_since, self._gave_up = conn, None, False
                return conn

    def call(self, fn: Callable[[Any], _T], *, creates: bool = False) -> _T:
        """``fn(connection)``, again on a new connection when libvirtd went away (blocking).

        ``creates``: ``fn`` makes something; it is only repeated when the
        connection was dead before it ran (checked with a round trip first).
        Other ``libvirtError``s pass through for the caller to translate.
        """
        while True:
            conn = self.connection()
            if creates:
                try:
                    conn.getLibVersion()
                except libvirt.libvirtError as err:
                    if not _connection_lost(conn, err):
                        raise
                    self._lost(conn)
                    continue
            try:
                return fn(conn)
            except libvirt.libvirtError as err:
                if not _connection_lost(conn, err):
                    raise
                self._lost(conn)
                if creates:
                    raise Vm2kvmError(
                        ErrorCode.LIBVIRT_UNAVAILABLE,
                        f"libvirtd at {self.uri} went away while it was asked to create something: "
                        f"{_message(err)}",
                        value=self.uri,
                        hint="migrate again when libvirtd is running",
                    ) from err

    def _lost(self, conn: Any) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
                self._down_since = self._down_since or time.time()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _unavailable(self, err: libvirt.libvirtError, waited: float) -> Vm2kvmError:
        if self.patience <= 0:
            return Vm2kvmError(
                ErrorCode.LIBVIRT_UNAVAILABLE,
                f"cannot connect to libvirt at {self.uri}: {_message(err)}",
                value=self.uri,
                hint="is libvirtd running? start it (systemctl start libvirtd) and try again",
            )
        since = self._down_since or time.time()
        return Vm2kvmError(
            ErrorCode.LIBVIRT_UNAVAILABLE,
            f"libvirtd at {self.uri} not reachable since {_clock(since)} ({waited:.0f} s; a job waits "
            f"up to {self.patience:g} s): {_message(err)}",
            value=self.uri,
            hint="start libvirtd and migrate again; vm2kvmd's libvirt_retry_seconds sets how long jobs wait",
        )

    def _tell(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            # The connection is gone either way.
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def __enter__(self) -> LibvirtHost:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    # --- storage ----------------------------------------------------------

    def pool_names(self) -> list[str]:
        with _converted():
            return self.call(lambda c: sorted(str(p.name()) for p in c.listAllStoragePools(0)))

    def _with_pool(
        self, name: str, fn: Callable[[Any], _T], *, active: bool = True, creates: bool = False
    ) -> _T:
        """``fn(pool)`` on the pool ``name`` looked up on the current connection (again after a reconnect)."""

        def run(conn: Any) -> _T:
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                raise _NoPool(err) from err
            if active and not pool.isActive():
                raise _InactivePool()
            return fn(pool)

        try:
            return self.call(run, creates=creates)
        except _NoPool as missing:
            known = ", ".join(self.pool_names()) or "none"
            raise Vm2kvmError(
                ErrorCode.POOL_NOT_FOUND,
                f"storage pool {name!r} does not exist (pools on {self.uri}: {known})",
                value=name,
                hint="choose one with --pool or create it with virsh pool-define-as",
            ) from missing.err
        except _InactivePool:
            raise Vm2kvmError(
                ErrorCode.POOL_NOT_FOUND,
                f"storage pool {name!r} is defined but not active",
                value=name,
                hint=f"start it with: virsh pool-start {name}",
            ) from None

    def pool(self, name: str) -> PoolInfo:
        """The active pool ``name``; POOL_NOT_FOUND if it is missing or not started."""

        def read(pool: Any) -> tuple[str, int]:
            _state, _capacity, _allocation, available = pool.info()
            return str(pool.XMLDesc(0)), int(available)

        with _converted():
            xml, available = self._with_pool(name, read)
        root = ET.fromstring(xml)
        return PoolInfo(
            name=name,
            type=root.get("type", ""),
            path=root.findtext("target/path", default=""),
            available=available,
        )

    def refresh_pool(self, pool: str) -> None:
        with _converted():
            self._with_pool(pool, lambda p: p.refresh(0))

    def volume_exists(self, pool: str, name: str) -> bool:
        def exists(p: Any) -> bool:
            try:
                p.storageVolLookupByName(name)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    return False
                raise
            return True

        with _converted():
            return self._with_pool(pool, exists)

    def create_volume(
        self, pool: str, name: str, capacity: int, fmt: str | None, *, preallocate: bool = False
    ) -> str:
        """Create a volume of ``capacity`` bytes and return its path.

        File volumes are sparse and read as zeros, unless ``preallocate``:
        then raw files get all their blocks, qcow2 files their metadata and
        all their clusters (``preallocation=falloc``).  ``fmt`` None: no
        format (a logical volume).  Logical volumes always get ``allocation``
        = ``capacity``: with less libvirt makes a sparse snapshot volume.
        Their content is whatever the disk held before.
        """
        if self.volume_exists(pool, name):
            raise _volume_exists(pool, name)
        allocation = capacity if preallocate or fmt is None else 0
        target = ""
        if fmt == "qcow2":
            # Without <compat> libvirt 9.0 writes qcow2 v2 (compat 0.10): no zero clusters, so
            # zeroes a guest later writes or discards take real space.
            target = "<target><format type='qcow2'/><compat>1.1</compat></target>"
        elif fmt:
            target = f"<target><format type='{escape(fmt)}'/></target>"
        xml = (
            "<volume>"
            f"<name>{escape(name)}</name>"
            f"<capacity unit='bytes'>{int(capacity)}</capacity>"
            f"<allocation unit='bytes'>{int(allocation)}</allocation>"
            f"{target}"
            "</volume>"
        )
        # libvirt preallocates raw files by their allocation; qcow2 only with this flag.
        flags = libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA if preallocate and fmt == "qcow2" else 0
        try:
            return self._with_pool(pool, lambda p: str(p.createXML(xml, flags).path()), creates=True)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                raise _volume_exists(pool, name) from err
            raise Vm2kvmError(
                ErrorCode.LIBVIRT_ERROR,
                f"cannot create volume {name!r} ({capacity} bytes) in pool {pool!r}: {_message(err)}",
                value=pool,
            ) from err

    def delete_volume(self, pool: str, name: str) -> None:
        with _converted(f"cannot delete volume {name!r} in pool {pool!r}"):
            self._with_pool(pool, lambda p: p.storageVolLookupByName(name).delete(0))

    # --- networks and domains ----------------------------------------------

    def network_exists(self, name: str) -> bool:
        return self._exists(lambda c: c.networkLookupByName(name), libvirt.VIR_ERR_NO_NETWORK)

    def domain_exists(self, name: str) -> bool:
        return self._exists(lambda c: c.lookupByName(name), libvirt.VIR_ERR_NO_DOMAIN)

    def uuid_in_use(self, uuid: str) -> bool:
        return self._exists(lambda c: c.lookupByUUIDString(uuid), libvirt.VIR_ERR_NO_DOMAIN)

    def _exists(self, lookup: Callable[[Any], object], missing: int) -> bool:
        def run(conn: Any) -> bool:
            try:
                lookup(conn)
            except libvirt.libvirtError as err:
                if err.get_error_code() == missing:
                    return False
                raise
            return True

        with _converted():
            return self.call(run)

    def define_domain(self, xml: str) -> str:
        """Define a persistent domain (validated against libvirt's schema); returns its name."""
        try:
            return self.call(
                lambda c: str(c.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE).name()), creates=True
            )
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED and "already" in _message(err):
                raise Vm2kvmError(
                    ErrorCode.DOMAIN_EXISTS, _message(err), hint="choose another name with --name"
                ) from err
            raise Vm2kvmError(
                ErrorCode.LIBVIRT_ERROR, f"libvirt refused the domain: {_message(err)}"
            ) from err

    def domain_uuid(self, name: str) -> str | None:
        """The UUID of domain ``name``; None when there is no such domain."""

        def run(conn: Any) -> str | None:
            try:
                return str(conn.lookupByName(name).UUIDString())
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise

        with _converted():
            return self.call(run)

    def undefine_domain(self, name: str, *, snapshots: bool = False) -> None:
        """Undefine ``name`` (with its NVRAM file, if libvirt made one).

        ``snapshots``: its snapshot metadata too (never their files); without
        it libvirt refuses a domain that has snapshots.
        """
        flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        if snapshots:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        with _converted(f"cannot undefine domain {name!r}"):
            self.call(lambda c: c.lookupByName(name).undefineFlags(flags))


class _NoPool(Exception):
    def __init__(self, err: libvirt.libvirtError) -> None:
        super().__init__(_message(err))
        self.err = err


class _InactivePool(Exception):
    pass


def _connection_lost(conn: Any, err: libvirt.libvirtError) -> bool:
    """``err`` says the connection is dead: an RPC-layer error, or libvirt marked it closed."""
    if err.get_error_domain() == libvirt.VIR_FROM_RPC:
        return True
    try:
        return not conn.isAlive()
    except libvirt.libvirtError:
        return True


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def _volume_exists(pool: str, name: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.VOLUME_EXISTS,
        f"volume {name!r} already exists in pool {pool!r}",
        value=name,
        hint="choose another domain name with --name, or delete the volume",
    )


@contextmanager
def _converted(context: str | None = None) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as err:
        text = f"{context}: {_message(err)}" if context else _message(err)
        raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, text) from err
