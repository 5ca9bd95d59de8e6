"""One real stack per module for the page's browser tests.

A private bus; the real ``vm2kvmd`` on it (``--bus session``, its job store in
the module's temp dir); ``cockpit-ws`` whose bridge takes that bus as its
system bus and serves the built page (``build/cockpit/vm2kvm``, built by
``scripts/build-cockpit.sh``, a no-op when up to date); headless Chromium; a
dir pool in the real libvirtd.  Tests share them; each test makes its own VM.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.bus import PrivateBus
from testbed.cockpit import Browser, CockpitWs, cockpit_missing
from testbed.services import DirPool
from tests.cockpit.page import Page
from tests.e2e.support import DaemonProcess

REPO = Path(__file__).resolve().parents[2]
PAGE_DIR = REPO / "build" / "cockpit" / "vm2kvm"
DEFINE_HOLD = "define:3"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = cockpit_missing()
    for item in items:
        if why and "tests/cockpit/" in str(item.path):
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def page_dir() -> Path:
    """The built page; built here when its sources changed (seconds; npm ci once, cached in build/)."""
    run = subprocess.run(
        [str(REPO / "scripts" / "build-cockpit.sh")], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, f"scripts/build-cockpit.sh failed:\n{run.stdout}{run.stderr}"
    assert (PAGE_DIR / "manifest.json").is_file()
    return PAGE_DIR


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    with PrivateBus() as private:
        yield private


@pytest.fixture(scope="module")
def daemon(
    libvirtd: Any, bus: PrivateBus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(bus.address, tmp_path_factory.mktemp("daemon"))
    # Each migration waits 3 s in its last phase: long enough for the page to show it running.
    start_daemon(proc, hold=DEFINE_HOLD)
    try:
        yield proc
    finally:
        assert proc.stop() in (0, None), "vm2kvmd did not exit cleanly on SIGTERM"


@pytest.fixture(scope="module")
def cockpit(bus: PrivateBus, page_dir: Path) -> Iterator[CockpitWs]:
    # The page spawns vm2kvmctl for vSphere sources: this checkout's, as make install puts it on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    with CockpitWs(bus.address, {"vm2kvm": page_dir}, env={"PATH": path}) as ws:
        yield ws


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def pool(libvirt_conn: Any) -> Iterator[DirPool]:
    with DirPool(libvirt_conn) as p:
        yield p


@pytest.fixture
def page(browser: Browser, cockpit: CockpitWs, daemon: DaemonProcess) -> Page:
    return Page(browser, cockpit)


def restart_daemon(daemon: DaemonProcess, hold: str = "") -> None:
    """Stop vm2kvmd and start it again on the same job store; ``hold`` sets VM2KVMD_TEST_HOLD."""
    assert daemon.stop() == 0
    start_daemon(daemon, hold)


def start_daemon(daemon: DaemonProcess, hold: str) -> None:
    old = os.environ.get("VM2KVMD_TEST_HOLD")
    os.environ["VM2KVMD_TEST_HOLD"] = hold
    try:
        daemon.start()  # the daemon's environment is ours at this moment
    finally:
        if old is None:
            del os.environ["VM2KVMD_TEST_HOLD"]
        else:
            os.environ["VM2KVMD_TEST_HOLD"] = old
