"""The Cockpit page in a real browser: real cockpit-ws, vm2kvmd, libvirtd, qemu-img and Chromium.

Each test uses the page as a user does (by role and accessible name) and checks
what the page shows against what really happened (the domain in libvirt, the
pool's volumes, the source's checksums).  The test VMs' disks are blank, so
every migration here runs without guest conversion (unchecked in the form).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from testbed.bus import PrivateBus
from testbed.cockpit import LIBVIRT_DBUS, LibvirtDbus
from testbed.services import DirPool, remove_domain, unique_name
from tests.cockpit.conftest import DEFINE_HOLD, restart_daemon, start_daemon
from tests.cockpit.page import Page
from tests.e2e.lifecycle_support import phony_vm
from tests.e2e.support import DaemonProcess, VmxDisk, ctl, write_vmx
from tests.helpers.vmdk_factory import make_vmdk, sha256_tree

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
# VM2KVMD_SCREENSHOTS=docs/images makes a run refresh the README's screenshots.
SCREENSHOTS = os.environ.get("VM2KVMD_SCREENSHOTS", "")


def small_vm(directory: Path, name: str = "Web Server") -> Path:
    vmdir = directory / "vm"
    vmdir.mkdir()
    disk = make_vmdk(vmdir, "disk", "monolithicSparse", 32 * MiB, pattern=b"vm2kvm cockpit test\n")
    return write_vmx(vmdir, name, [VmxDisk("scsi0:0", disk.name)])


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(REPO / SCREENSHOTS / f"{name}.png")


def fill_new_migration(page: Page, vmx: Path, pool: DirPool, domain: str, *, convert: bool = False) -> None:
    """New migration: the source, Inspect, the preview, the options a user sets."""
    page.open("/new")
    page.find("radio", "File on this host").click()
    page.type_into(page.find("textbox", "VMware file on this host"), str(vmx))
    page.find("button", "Inspect").click()
    page.find("table", "Hardware")
    page.type_into(page.find("textbox", "Name"), domain)
    pools = page.find("combobox", "Storage pool")
    page.wait(lambda: pool.name in pools.text, f"pool {pool.name} in the list")
    from selenium.webdriver.support.ui import Select

    Select(pools).select_by_value(pool.name)
    conversion = page.find("checkbox", "Convert the guest", exact=False)
    if conversion.is_selected() != convert:
        conversion.click()
    assert conversion.is_selected() == convert


def remove_migrated(libvirt_conn: Any, pool: DirPool, domain: str) -> None:
    """Undefine ``domain`` (if defined) and delete the pool's volumes: the module shares the pool."""
    if domain in [d.name() for d in libvirt_conn.listAllDomains(0)]:
        remove_domain(libvirt_conn, domain)
    for volume in pool.volume_names():
        pool.pool.storageVolLookupByName(volume).delete(0)


def job_number_from_url(page: Page) -> int:
    def number() -> int | None:
        url = str(page.driver.current_url)
        return int(url.rsplit("/job/", 1)[1]) if "#/job/" in url else None

    return page.wait(number, "the job's page")


def test_new_migration_runs_to_completion_and_shows_the_report(
    page: Page, pool: DirPool, libvirt_conn: Any, tmp_path: Path
) -> None:
    vmx = small_vm(tmp_path)
    before = sha256_tree(vmx.parent)
    domain = unique_name("dom")
    fill_new_migration(page, vmx, pool, domain)
    hardware = page.find("table", "Hardware")
    assert "2" in hardware.find_element("css selector", "[data-key='cpus']").text
    # The OS virt-manager and cockpit-machines will show, planned from VMware's guestOS.
    assert (
        "http://debian.org/debian/11" in hardware.find_element("css selector", "[data-key='guest-os']").text
    )
    page.driver.execute_script("arguments[0].scrollIntoView()", hardware)  # the table, not the options
    screenshot(page, "cockpit-preview")
    page.find("button", "Start migration").click()
    number = job_number_from_url(page)
    try:
        page.find("heading", f"Job {number}")
        bar = page.find("progressbar", f"Progress of job {number}")
        # Live, from the daemon's signals: the copy done while the job still runs (the daemon
        # holds each job 3 s in phase define), then completed.
        page.wait(
            lambda: (
                page.text_of(f"job-state-{number}") == "running"
                and bar.get_attribute("aria-valuenow") == "100"
            ),
            f"job {number} running with its copy at 100%",
        )
        assert page.text_of("job-phase") == "define"
        page.wait(
            lambda: page.text_of(f"job-state-{number}") == "completed", f"job {number} completed", timeout=120
        )
        assert bar.get_attribute("aria-valuenow") == "100"
        done = page.alert(f"Domain {domain} is defined")
        assert done.is_displayed()

        # The source-vs-target table of the report, as GetReport gives it.
        table = page.find("table", "Source and target")
        cpus = table.find_element("css selector", "tr[data-key='cpus']").text
        assert "2 vCPUs" in cpus, cpus
        disk_row = table.find_element("css selector", "tr[data-key='disk:scsi0:0']").text
        assert "32.0 MiB" in disk_row and str(pool.path) in disk_row, disk_row
        page.driver.execute_script("arguments[0].scrollIntoView()", page.by_id("job-report"))
        screenshot(page, "cockpit-report")

        # What the page said happened did happen: the domain, its disk, the metadata for virt-manager.
        root = etree.fromstring(libvirt_conn.lookupByName(domain).XMLDesc(0).encode())
        ns = {"libosinfo": "http://libosinfo.org/xmlns/libvirt/domain/1.0"}
        assert root.xpath("//libosinfo:os/@id", namespaces=ns) == ["http://debian.org/debian/11"]
        assert str(root.findtext("description")).startswith(f"Migrated by vm2kvm from VMware VMX {vmx} on ")
        assert pool.volume_names() == [
            Path(p).name for p in root.xpath("//disk[@device='disk']/source/@file")
        ]

        page.open("/")
        row = page.by_id(f"job-row-{number}")
        assert row.get_attribute("data-state") == "completed"
        assert page.find("table", "Migration jobs").is_displayed()
    finally:
        remove_migrated(libvirt_conn, pool, domain)
    assert sha256_tree(vmx.parent) == before


@pytest.mark.skipif(
    not (Path("/usr/share/cockpit/machines").is_dir() and os.access(LIBVIRT_DBUS, os.X_OK)),
    reason="cockpit-machines and libvirt-dbus are not installed (scripts/setup.sh installs them)",
)
def test_a_completed_job_opens_its_domain_in_cockpit_machines(
    page: Page, bus: PrivateBus, daemon: DaemonProcess, pool: DirPool, libvirt_conn: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    vmx = small_vm(tmp_path, "Open Me")
    domain = unique_name("dom")
    run = ctl(daemon.address, "migrate", str(vmx), "--pool", pool.name, "--name", domain, "--json")
    assert run.status == 0, run.err
    number = int(run.json()["job"].rsplit("/", 1)[1])
    driver = page.driver
    try:
        # cockpit-machines reads libvirt through libvirt-dbus, on the bus the bridge uses.
        with LibvirtDbus(bus.address):
            driver.get(f"{page.cockpit.shell_url('vm2kvm')}#/job/{number}")
            driver.switch_to.frame(
                page.wait(lambda: driver.find_element(By.NAME, "cockpit1:localhost/vm2kvm"), "page")
            )
            page.find("link", f"Open {domain} in Virtual Machines").click()
            driver.switch_to.default_content()
            machines = page.wait(
                lambda: next(
                    (
                        f
                        for f in driver.find_elements(By.CSS_SELECTOR, "iframe[name$='/machines']")
                        if f.is_displayed()
                    ),
                    None,
                ),
                "the Virtual Machines page",
            )
            driver.switch_to.frame(machines)
            # cockpit-machines finds no hardware virtualization here (nested, TCG) and says so
            # first; a user would press Ignore too.

            def vm_page() -> bool:
                ignore = page.find_now("button", "Ignore")
                if ignore is not None:
                    ignore.click()
                return domain in driver.find_element(By.TAG_NAME, "body").text

            page.wait(vm_page, f"{domain} in cockpit-machines")
            screenshot(page, "cockpit-machines")
    finally:
        driver.switch_to.default_content()
        remove_migrated(libvirt_conn, pool, domain)


def test_a_refusal_shows_the_message_and_the_code(page: Page, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "gone.vmx"
    page.open("/new")
    page.find("radio", "File on this host").click()
    page.type_into(page.find("textbox", "VMware file on this host"), str(missing))
    page.find("button", "Inspect").click()
    alert = page.alert("Inspect failed")
    assert alert.get_attribute("data-error-code") == "SourceNotFound"
    text = " ".join(alert.text.split())
    assert str(missing) in text and "Error code: SourceNotFound" in text, text


def test_the_page_survives_a_daemon_restart(
    page: Page, daemon: DaemonProcess, pool: DirPool, libvirt_conn: Any, tmp_path: Path
) -> None:
    vmx = small_vm(tmp_path, "Restart Me")
    domain = unique_name("dom")
    run = ctl(daemon.address, "migrate", str(vmx), "--pool", pool.name, "--name", domain, "--json")
    assert run.status == 0, run.err
    remove_migrated(libvirt_conn, pool, domain)
    number = int(run.json()["job"].rsplit("/", 1)[1])

    page.open("/")
    assert page.by_id(f"job-row-{number}").get_attribute("data-state") == "completed"
    assert daemon.stop() == 0
    page.alert("Cannot reach vm2kvmd")
    start_daemon(daemon, hold=DEFINE_HOLD)
    # Without a reload: the page notices the daemon's return and reads the jobs again.
    page.wait(
        lambda: page.by_id(f"job-row-{number}").get_attribute("data-state") == "completed",
        f"job {number} back in the table",
    )
    assert page.text_of(f"job-state-{number}") == "completed"


def test_cancel_a_running_job(
    page: Page, daemon: DaemonProcess, pool: DirPool, libvirt_conn: Any, tmp_path: Path
) -> None:
    # Every migration of this daemon waits 120 s on entering its copy phase (cancellable).
    restart_daemon(daemon, hold="copy:120")
    try:
        vmx = small_vm(tmp_path, "Cancel Me")
        before = sha256_tree(vmx.parent)
        domain = unique_name("dom")
        fill_new_migration(page, vmx, pool, domain)
        page.find("button", "Start migration").click()
        number = job_number_from_url(page)
        page.wait(lambda: page.text_of("job-phase") == "copy", f"job {number} in phase copy")
        assert page.text_of(f"job-state-{number}") == "running"
        page.find("button", f"Cancel job {number}").click()
        page.wait(lambda: page.text_of(f"job-state-{number}") == "cancelled", f"job {number} cancelled")
        alert = page.alert("The migration was cancelled")
        assert alert.get_attribute("data-error-code") == "Cancelled"
        assert page.find_now("button", f"Cancel job {number}") is None
        page.find("button", f"Retry job {number}")
        # Rolled back: no domain, no volume; the source untouched.
        assert domain not in [d.name() for d in libvirt_conn.listAllDomains(0)]
        assert pool.volume_names() == []
        assert sha256_tree(vmx.parent) == before
        page.open("/")
        assert page.by_id(f"job-row-{number}").get_attribute("data-state") == "cancelled"
        screenshot(page, "cockpit-jobs")
    finally:
        restart_daemon(daemon, hold=DEFINE_HOLD)


@pytest.mark.timeout(900)
def test_a_converted_guest_reports_its_changes_and_its_os_from_inspection(
    page: Page, pool: DirPool, libvirt_conn: Any, phony_images: dict[str, Path], tmp_path: Path
) -> None:
    """Guest conversion on (one libguestfs appliance under TCG): the report's guest tables, and
    the libosinfo id from what the guest is, where VMware's guestOS names no release."""
    pytest.importorskip("guestfs")
    vmx, _ = phony_vm(phony_images["debian11"], tmp_path / "vm")
    vmx.write_text(vmx.read_text().replace('guestOS = "debian11-64"', 'guestOS = "other5xlinux-64"'))
    before = sha256_tree(vmx.parent)
    domain = unique_name("dom")
    fill_new_migration(page, vmx, pool, domain, convert=True)
    page.find("button", "Start migration").click()
    number = job_number_from_url(page)
    try:
        page.wait(
            lambda: page.text_of(f"job-state-{number}") == "completed", f"job {number} completed", timeout=600
        )
        guest = page.find("table", "Guest facts")
        assert "Distribution debian 11.9" in " ".join(guest.text.split()), guest.text
        changes = page.find("table", "Changes in the guest")
        assert changes.find_elements("css selector", "tbody tr"), changes.text
        os_row = page.find("table", "Source and target").find_element(
            "css selector", "tr[data-key='guest-os']"
        )
        assert "http://debian.org/debian/11 (libosinfo)" in os_row.text, os_row.text
        root = etree.fromstring(libvirt_conn.lookupByName(domain).XMLDesc(0).encode())
        ns = {"libosinfo": "http://libosinfo.org/xmlns/libvirt/domain/1.0"}
        assert root.xpath("//libosinfo:os/@id", namespaces=ns) == ["http://debian.org/debian/11"]
    finally:
        remove_migrated(libvirt_conn, pool, domain)
    assert sha256_tree(vmx.parent) == before


def test_the_form_is_reachable_and_usable_by_keyboard(page: Page, tmp_path: Path) -> None:
    """Tab to "New migration", Enter; Tab to the source field, type, Tab to Inspect, Enter."""
    from selenium.webdriver.common.keys import Keys

    vmx = small_vm(tmp_path, "Keyboard")
    page.open("/")
    page.find("button", "New migration")
    driver = page.driver
    page.tab_to("button", "New migration")
    page.keys(Keys.ENTER)
    page.wait(lambda: str(driver.current_url).endswith("#/new"), "the new-migration form")
    page.tab_to("textbox", "VMware file on this host")
    page.keys(str(vmx))
    page.tab_to("button", "Inspect")
    page.keys(Keys.ENTER)
    hardware = page.find("table", "Hardware")
    assert "Keyboard" in hardware.find_element("css selector", "[data-key='name']").text
