"""Fixtures of the reliability tests: a libvirtd of the test's own, a pool in it, a vm2kvmd on it.

The faults are real: the test's own libvirtd (``testbed/private_libvirtd.py``)
is stopped and started again, its pool destroyed, a domain defined by another
client; the shared libvirtd of the session is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from testbed.private_libvirtd import PrivateLibvirtd
from testbed.services import DirPool
from tests.e2e.conftest import bus_address, daemons
from tests.e2e.lifecycle_support import ServiceDaemon

__all__ = ["bus_address", "daemons"]


@pytest.fixture
def own_libvirtd() -> Iterator[PrivateLibvirtd]:
    with PrivateLibvirtd() as libvirtd:
        yield libvirtd


@pytest.fixture
def own_pool(own_libvirtd: PrivateLibvirtd) -> Iterator[DirPool]:
    # The pool's own connection dies with a restart; DirPool.stop then only removes the directory,
    # and the libvirtd's state goes with its directory.
    with DirPool(own_libvirtd.uri) as pool:
        yield pool


@pytest.fixture
def reliab_daemon(
    daemons: Callable[..., ServiceDaemon], own_libvirtd: PrivateLibvirtd, own_pool: DirPool
) -> Callable[..., ServiceDaemon]:
    """``reliab_daemon(retry=SECONDS, env=...)``: a started vm2kvmd whose jobs use the test's libvirtd."""

    def make(retry: int = 120, env: dict[str, str] | None = None) -> ServiceDaemon:
        config = (
            f'libvirt_uri = "{own_libvirtd.uri}"\n'
            f'default_pool = "{own_pool.name}"\n'
            f"libvirt_retry_seconds = {retry}\n"
        )
        return daemons(config=config, env=env).start()

    return make


def connect(uri: str) -> Any:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.open(uri)


@pytest.fixture
def vm_dir(tmp_path: Path) -> Path:
    return tmp_path / "vm"
