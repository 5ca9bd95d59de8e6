"""The libvirt host a migration writes to: pools, volumes, networks, domains.

Thin and blocking on purpose: every method is one or two libvirt calls, and
callers in the event loop run them with ``asyncio.to_thread``.  Every
``libvirt.libvirtError`` leaves this module as a ``Vm2kvmError``: a specific
code where the caller can act on it (``PoolNotFound``, ``VolumeExists``),
otherwise ``LibvirtError`` carrying libvirt's own message.
"""

from __future__ import annotations

import contextlib
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from vm2kvmd.errors import ErrorCode, Vm2kvmError

# Pool types whose volumes are files qemu-img can write as qcow2 or raw.
FILE_POOL_TYPES = ("dir", "fs", "netfs")
# Pool types whose volumes are block devices (LVM logical volumes): raw only, fully
# allocated, and not zeroed when created.
BLOCK_POOL_TYPES = ("logical",)

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
    """A lazily opened connection to one libvirt URI."""

    def __init__(self, uri: str) -> None:
        _silence_libvirt()
        self.uri = uri
        self._conn: Any = None
        self._lock = threading.Lock()

    # --- connection -------------------------------------------------------

    def connection(self) -> Any:
        """The ``virConnect``, opened on first use (blocking)."""
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as err:
                    raise Vm2kvmError(
                        ErrorCode.LIBVIRT_ERROR,
                        f"cannot connect to libvirt at {self.uri}: {_message(err)}",
                        hint="is libvirtd running?",
                    ) from err
            return self._conn

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
            return sorted(str(p.name()) for p in self.connection().listAllStoragePools(0))

    def _lookup_pool(self, name: str, *, active: bool = True) -> Any:
        conn = self.connection()
        try:
            pool = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, _message(err)) from err
            known = ", ".join(self.pool_names()) or "none"
            raise Vm2kvmError(
                ErrorCode.POOL_NOT_FOUND,
                f"storage pool {name!r} does not exist (pools on {self.uri}: {known})",
                value=name,
                hint="choose one with --pool or create it with virsh pool-define-as",
            ) from err
        with _converted():
            if active and not pool.isActive():
                raise Vm2kvmError(
                    ErrorCode.POOL_NOT_FOUND,
                    f"storage pool {name!r} is defined but not active",
                    value=name,
                    hint=f"start it with: virsh pool-start {name}",
                )
        return pool

    def pool(self, name: str) -> PoolInfo:
        """The active pool ``name``; POOL_NOT_FOUND if it is missing or not started."""
        pool = self._lookup_pool(name)
        with _converted():
            root = ET.fromstring(pool.XMLDesc(0))
            _state, _capacity, _allocation, available = pool.info()
        return PoolInfo(
            name=name,
            type=root.get("type", ""),
            path=root.findtext("target/path", default=""),
            available=int(available),
        )

    def refresh_pool(self, pool: str) -> None:
        p = self._lookup_pool(pool)
        with _converted():
            p.refresh(0)

    def volume_exists(self, pool: str, name: str) -> bool:
        p = self._lookup_pool(pool)
        try:
            p.storageVolLookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, _message(err)) from err
        return True

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
        p = self._lookup_pool(pool)
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
            vol = p.createXML(xml, flags)
            return str(vol.path())
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                raise _volume_exists(pool, name) from err
            raise Vm2kvmError(
                ErrorCode.LIBVIRT_ERROR,
                f"cannot create volume {name!r} ({capacity} bytes) in pool {pool!r}: {_message(err)}",
                value=pool,
            ) from err

    def delete_volume(self, pool: str, name: str) -> None:
        p = self._lookup_pool(pool)
        with _converted(f"cannot delete volume {name!r} in pool {pool!r}"):
            p.storageVolLookupByName(name).delete(0)

    # --- networks and domains ----------------------------------------------

    def network_exists(self, name: str) -> bool:
        try:
            self.connection().networkLookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return False
            raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, _message(err)) from err
        return True

    def domain_exists(self, name: str) -> bool:
        try:
            self.connection().lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, _message(err)) from err
        return True

    def uuid_in_use(self, uuid: str) -> bool:
        try:
            self.connection().lookupByUUIDString(uuid)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, _message(err)) from err
        return True

    def define_domain(self, xml: str) -> str:
        """Define a persistent domain (validated against libvirt's schema); returns its name."""
        conn = self.connection()
        try:
            dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED and "already" in _message(err):
                raise Vm2kvmError(
                    ErrorCode.DOMAIN_EXISTS, _message(err), hint="choose another name with --name"
                ) from err
            raise Vm2kvmError(
                ErrorCode.LIBVIRT_ERROR, f"libvirt refused the domain: {_message(err)}"
            ) from err
        return str(dom.name())

    def domain_uuid(self, name: str) -> str | None:
        """The UUID of domain ``name``; None when there is no such domain."""
        try:
            return str(self.connection().lookupByName(name).UUIDString())
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, _message(err)) from err

    def undefine_domain(self, name: str, *, snapshots: bool = False) -> None:
        """Undefine ``name`` (with its NVRAM file, if libvirt made one).

        ``snapshots``: its snapshot metadata too (never their files); without
        it libvirt refuses a domain that has snapshots.
        """
        flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        if snapshots:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        with _converted(f"cannot undefine domain {name!r}"):
            dom = self.connection().lookupByName(name)
            dom.undefineFlags(flags)


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
