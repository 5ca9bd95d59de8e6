"""A user whom polkit refuses: the page explains the refusal instead of failing blankly.

Here cockpit-ws (and so the bridge and every call of the page) runs as
``nobody``, as a logged-in user without Cockpit's administrative access does;
vm2kvmd (root) asks polkit, which is python-dbusmock's ``polkitd`` template (no
real polkitd can run without a system bus and logind) and refuses every action.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.bus import PrivateBus, ask_bus_driver
from testbed.cockpit import CockpitWs
from testbed.processes import register_service, stop_process
from tests.cockpit.page import Page
from tests.service.test_auth import POLKIT_MOCK_POLICY

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]
pytest.importorskip("dbusmock")

NOBODY = "nobody"
REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs cockpit-ws as nobody)")


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    """A bus with the system bus's default-deny policy and the project's own policy file.

    (A session-kind bus admits only its own uid; the page, as nobody, would not even connect.)
    """
    mock_policy = tmp_path_factory.mktemp("policy") / "polkit-mock.conf"
    mock_policy.write_text(POLKIT_MOCK_POLICY)
    include = [REPO / "dbus" / "org.vm2kvm.Daemon1.conf", mock_policy]
    with PrivateBus(kind="system", include_files=include) as private:
        assert private.tmpdir is not None
        os.chmod(private.tmpdir, 0o711)  # nobody reaches the socket, cannot list the directory
        yield private


def has_owner(address: str, name: str) -> bool:
    return ask_bus_driver(address, "NameHasOwner", f"string:{name}") == ["boolean", "true"]


@pytest.fixture(scope="module")
def polkit(bus: PrivateBus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """python-dbusmock's polkitd on the bus: every CheckAuthorization says no (nothing set allowed)."""
    log = tmp_path_factory.mktemp("polkit") / "polkit-mock.log"
    proc = subprocess.Popen(
        ["/usr/bin/python3", "-m", "dbusmock", "--template", "polkitd"],
        env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address, "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    register_service(proc.pid)
    try:
        deadline = time.monotonic() + 20
        while not has_owner(bus.address, "org.freedesktop.PolicyKit1"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield
    finally:
        stop_process(proc, timeout=5)


@pytest.fixture(scope="module")
def cockpit(bus: PrivateBus, page_dir: Path) -> Iterator[CockpitWs]:
    with CockpitWs(bus.address, {"vm2kvm": page_dir}, user=NOBODY) as ws:
        yield ws


@needs_root
def test_a_denied_inspect_is_explained(page: Page, polkit: None, tmp_path: Path) -> None:
    page.open("/")
    page.find("button", "New migration")  # reading the jobs needs no authorization
    page.open("/new")
    page.find("radio", "File on this host").click()
    page.type_into(page.find("textbox", "VMware file on this host"), str(tmp_path / "vm.vmx"))
    page.find("button", "Inspect").click()
    alert = page.alert("Inspect failed")
    assert alert.get_attribute("data-error-code") == "NotAuthorized", alert.text
    text = " ".join(alert.text.split())
    assert "not authorized to" in text and "(polkit action org.vm2kvm.inspect)" in text, text
    assert "Error code: NotAuthorized" in text, text
