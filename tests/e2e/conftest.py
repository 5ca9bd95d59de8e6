"""Fixtures of the end-to-end tests: one real vm2kvmd per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.bus import PrivateBus
from tests.e2e.lifecycle_support import MakeDaemon, ServiceDaemon
from tests.e2e.support import DaemonProcess


@pytest.fixture(scope="module")
def daemon(libvirtd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with PrivateBus() as bus:
        proc = DaemonProcess(bus.address, tmp_path_factory.mktemp("daemon")).start()
        try:
            yield proc
        finally:
            assert proc.stop() == 0, "vm2kvmd did not exit cleanly on SIGTERM"


@pytest.fixture(scope="module")
def bus_address(libvirtd: Any) -> Iterator[str]:
    """A private bus for the ServiceDaemons of one module (the service lifecycle tests)."""
    with PrivateBus() as bus:
        yield bus.address


@pytest.fixture
def daemons(bus_address: str, tmp_path: Path) -> Iterator[MakeDaemon]:
    """``daemons(config=..., env=...)``: a ServiceDaemon (not started) in the test's tmp dir; closed after."""
    made: list[ServiceDaemon] = []

    def make(config: str = "", env: dict[str, str] | None = None) -> ServiceDaemon:
        daemon = ServiceDaemon(bus_address, tmp_path / f"daemon{len(made)}", config=config, env=env)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()
