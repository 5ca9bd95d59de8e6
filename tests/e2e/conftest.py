"""Fixtures of the end-to-end tests: one real vm2kvmd per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.support import DaemonProcess
from tests.harness.bus import PrivateBus


@pytest.fixture(scope="module")
def daemon(libvirtd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with PrivateBus() as bus:
        proc = DaemonProcess(bus.address, tmp_path_factory.mktemp("daemon")).start()
        try:
            yield proc
        finally:
            assert proc.stop() == 0, "vm2kvmd did not exit cleanly on SIGTERM"
