"""The Cockpit harness itself (testbed/cockpit.py), on a trivial package of its own.

Proves, without vm2kvm's page: cockpit-ws serves a package linked into its
temp home, the page's ``cockpit.dbus`` reaches the test's private bus (as its
system bus), Cockpit's shell lists the package in its menu, and Chromium runs
under Selenium.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.bus import PrivateBus, ask_bus_driver
from testbed.cockpit import Browser, CockpitWs, cockpit_missing
from testbed.processes import pid_alive

pytestmark = pytest.mark.skipif(bool(cockpit_missing()), reason=cockpit_missing() or "-")

MANIFEST = {"version": 0, "tools": {"index": {"label": "Harness smoke"}}}
# Cockpit's Content-Security-Policy refuses inline scripts: the script is a file of the package.
INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Harness smoke</title>
<script src="../base1/cockpit.js"></script><script src="smoke.js" defer></script></head>
<body><h1>Harness smoke</h1><output id="bus-id">waiting</output></body></html>
"""
SCRIPT = """
cockpit.dbus("org.freedesktop.DBus", {bus: "system"})
  .call("/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", [])
  .then(reply => { document.getElementById("bus-id").textContent = reply[0]; })
  .catch(error => { document.getElementById("bus-id").textContent = "error: " + error.message; });
"""


def write_package(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text(json.dumps(MANIFEST))
    (directory / "index.html").write_text(INDEX)
    (directory / "smoke.js").write_text(SCRIPT)
    return directory


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    with PrivateBus() as private:
        yield private


@pytest.fixture(scope="module")
def cockpit(bus: PrivateBus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CockpitWs]:
    package = write_package(tmp_path_factory.mktemp("pkg") / "harness-smoke")
    with CockpitWs(bus.address, {"harness-smoke": package}) as ws:
        yield ws


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def bus_id(address: str) -> str:
    """The bus's own id, asked by us: the page must show the same."""
    (answer,) = ask_bus_driver(address, "GetId")
    return answer


def wait_text(browser: Browser, element_id: str, unwanted: str, timeout: float = 20) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def changed(driver: object) -> str | bool:
        text = str(browser.driver.find_element(By.ID, element_id).text)
        return text if text and text != unwanted else False

    return str(WebDriverWait(browser.driver, timeout).until(changed))


def test_page_talks_to_the_private_bus_as_its_system_bus(
    bus: PrivateBus, cockpit: CockpitWs, browser: Browser
) -> None:
    browser.driver.get(cockpit.url("harness-smoke"))
    shown = wait_text(browser, "bus-id", "waiting")
    assert shown == bus_id(bus.address), browser.console()


def test_shell_lists_the_package_in_its_menu(bus: PrivateBus, cockpit: CockpitWs, browser: Browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.driver.get(cockpit.base + "/")
    wait = WebDriverWait(browser.driver, 30)
    link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "Harness smoke")))
    link.click()
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[name$='harness-smoke']")))
    browser.driver.switch_to.frame(frame)
    try:
        assert wait_text(browser, "bus-id", "waiting") == bus_id(bus.address)
    finally:
        browser.driver.switch_to.default_content()


def test_stop_ends_cockpit_ws_and_its_home(bus: PrivateBus, tmp_path: Path) -> None:
    package = write_package(tmp_path / "pkg")
    ws = CockpitWs(bus.address, {"smoke": package}).start()
    pid, home = ws.pid, ws.home
    assert pid_alive(pid) and home is not None and home.is_dir()
    ws.stop()
    assert not pid_alive(pid)
    assert not home.exists()


def test_a_package_without_manifest_is_refused(bus: PrivateBus, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no manifest\.json"):
        CockpitWs(bus.address, {"empty": tmp_path}).start()
