"""The page's ESXi/vCenter source in a real browser: the page spawns the real vm2kvmctl through
Cockpit's bridge, which hands vm2kvmd the password as a file descriptor; VMware's vSphere
simulator (ESX mode, TLS on, its own self-signed certificate) is the host.

The simulator's VMs get a small flat disk with random content (no OS: no guest conversion); the
migrated disk must read as the source does, the datastore must not change, and the password must
show nowhere: not in any process's command line while the page works, not in the daemon's log,
job store or D-Bus properties, not in cockpit-ws's log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from testbed.cockpit import CockpitWs
from testbed.services import DirPool, unique_name
from testbed.vcsim import USER
from tests.cockpit.page import Page
from tests.cockpit.test_page import job_number_from_url, remove_migrated, screenshot
from tests.e2e.support import DaemonProcess, ctl
from tests.e2e_vsphere.test_migrate_vsphere import (  # sim: the module's simulator, a fixture
    SECRET,
    Sim,
    _dbus_properties,
    place_flat_disk,
    sim,
    target_path,
)
from tests.helpers.vmdk_factory import images_equal, sha256_tree
from tests.test_remote_disk import CmdlineWatch

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]
__all__ = ["sim"]  # the fixture, imported

MiB = 1 << 20
VM = "ha-host_VM0"


def connect_form(page: Page, sim: Sim, password: str, *, thumbprint: str = "") -> None:
    """New migration, ESXi or vCenter: the URI (host and port only), user, password, trust."""
    page.open("/new")
    page.find("radio", "VMware ESXi or vCenter").click()
    page.type_into(page.find("textbox", "ESXi or vCenter URI"), f"esx://{sim.info.host}:{sim.port}/")
    page.type_into(page.find("textbox", "User name"), USER)
    page.type_into(page.find("textbox", "Password"), password)
    if thumbprint:
        page.find("radio", "Accept only the certificate with this SHA-256 thumbprint").click()
        page.type_into(page.find("textbox", "SHA-256 thumbprint"), thumbprint)


def vm_rows(page: Page) -> dict[str, str]:
    table = page.find("table", "VMware VMs")
    return {
        str(row.get_attribute("data-vm")): " ".join(str(row.text).split())
        for row in table.find_elements("css selector", "tr[data-vm]")
    }


def test_list_pin_inspect_and_migrate_with_the_password_nowhere(
    page: Page, sim: Sim, cockpit: CockpitWs, daemon: DaemonProcess, pool: DirPool, libvirt_conn: Any
) -> None:
    disk = place_flat_disk(sim, VM, "cockpit", 16 * MiB, random=True)
    before = sha256_tree(disk.parent)
    domain = unique_name("dom")
    with CmdlineWatch(SECRET) as watch:
        connect_form(page, sim, SECRET)
        assert page.find("radio", "Verify it with this host's CA certificates").is_selected()
        page.find("button", "List VMs").click()
        # The simulator's certificate is its own CA: not trusted; the page offers its thumbprint.
        failed = page.alert("Listing the VMs failed")
        assert failed.get_attribute("data-error-code") == "CertificateNotTrusted"
        assert sim.info.thumbprint in failed.text
        page.find("button", "Pin this thumbprint").click()
        rows = page.wait(lambda: vm_rows(page), "the VMs listed")
        assert sorted(rows) == ["ha-host_VM0", "ha-host_VM1"]
        assert rows[VM].startswith(f"{VM} poweredOff otherGuest 1"), rows[VM]
        assert "LocalDS_0" in rows[VM]
        assert page.find("radio", "Accept only the certificate with this SHA-256 thumbprint").is_selected()
        assert page.by_id("source-thumbprint").get_attribute("value") == sim.info.thumbprint
        page.driver.execute_script("window.scrollTo(0, 0)")
        screenshot(page, "cockpit-vsphere")

        page.find("button", f"Inspect {VM}").click()
        hardware = page.find("table", "Hardware")
        disk_row = hardware.find_element("css selector", "tr[data-key^='disk:']").text
        assert "16.0 MiB, read over HTTPS" in disk_row and "not migrated" not in disk_row, disk_row
        assert page.find("checkbox", "Shut the source VM down first", exact=False).is_selected() is False
        page.type_into(page.find("textbox", "Name"), domain)
        from selenium.webdriver.support.ui import Select

        pools = page.find("combobox", "Storage pool")
        page.wait(lambda: pool.name in pools.text, f"pool {pool.name} in the list")
        Select(pools).select_by_value(pool.name)
        page.find("checkbox", "Convert the guest", exact=False).click()
        page.find("button", "Start migration").click()
        number = job_number_from_url(page)
        try:
            page.wait(
                lambda: page.text_of(f"job-state-{number}") == "completed",
                f"job {number} completed",
                timeout=90,
            )
            # URI#VM: the URI as the page composed it from the form, no password in it
            assert page.text_of("job-source") == f"{sim.uri}#{VM}"
        except BaseException:
            remove_migrated(libvirt_conn, pool, domain)
            raise
    try:
        assert watch.saw_nbdkit  # the watch ran while the disk was read
        assert watch.leaks == []
        assert images_equal(disk, target_path(libvirt_conn, domain), fmt_a="vmdk")
        seen = [
            ctl(daemon.address, "--json", "jobs", "--all").out,
            ctl(daemon.address, "logs", str(number)).out,
            _dbus_properties(daemon.address, "/org/vm2kvm/Daemon1", "org.vm2kvm.Manager1"),
            _dbus_properties(daemon.address, f"/org/vm2kvm/Daemon1/jobs/{number}", "org.vm2kvm.Job1"),
        ]
        assert all(SECRET not in text for text in seen)
        assert sim.info.host in seen[0]  # the job's Source, without the password
        for path in [daemon.log, cockpit.log, *daemon.state_dir.rglob("*")]:
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    finally:
        remove_migrated(libvirt_conn, pool, domain)
    assert sha256_tree(disk.parent) == before


def test_wrong_password_and_a_powered_on_vm_are_refused_by_name(
    page: Page, sim: Sim, daemon: DaemonProcess, pool: DirPool, tmp_path: Path
) -> None:
    """The form filled by keyboard alone (Tab, arrows within a radio group, Enter submits)."""
    from selenium.webdriver.common.keys import Keys

    wrong = f"Wr0ng-{os.getpid()}-xyzzy"
    page.open("/new")
    page.find("radio", "File on this host")
    page.tab_to("radio", "File on this host")
    page.keys(Keys.ARROW_RIGHT)
    assert page.find("radio", "VMware ESXi or vCenter").is_selected()
    page.tab_to("textbox", "ESXi or vCenter URI")
    page.keys(f"{sim.info.host}:{sim.port}")  # a host alone: esx://HOST/
    page.tab_to("textbox", "User name")
    page.keys(USER)  # Tab selected the field's "root": typing replaces it
    page.tab_to("textbox", "Password")
    page.keys(wrong)
    page.tab_to("radio", "Verify it with this host's CA certificates")
    page.keys(Keys.ARROW_DOWN)
    page.tab_to("textbox", "SHA-256 thumbprint")
    page.keys(sim.info.thumbprint, Keys.ENTER)
    failed = page.alert("Listing the VMs failed")
    assert failed.get_attribute("data-error-code") == "LoginFailed"
    assert "refused the login" in failed.text and wrong not in failed.text
    assert page.find_now("button", "Pin this thumbprint") is None

    jobs = len(ctl(daemon.address, "--json", "jobs", "--all").json())
    place_flat_disk(sim, VM, "running", 4 * MiB)
    sim.power(sim.vm(VM), on=True)
    try:
        page.type_into(page.find("textbox", "Password"), SECRET)
        page.find("textbox", "Password").submit()  # Enter in the form lists the VMs
        page.wait(lambda: "poweredOn" in vm_rows(page).get(VM, ""), f"{VM} listed powered on")
        page.find("button", f"Inspect {VM}").click()
        page.find("table", "Hardware")
        assert page.alert(f"{VM} is powered on").is_displayed()
        assert page.find("checkbox", "Power it off when its guest cannot be shut down").is_enabled() is False
        page.find("button", "Start migration").click()
        refused = page.alert("The migration did not start")
        assert refused.get_attribute("data-error-code") == "SourcePoweredOn"
        assert "poweredOn" in refused.text
    finally:
        sim.power(sim.vm(VM), on=False)
    assert len(ctl(daemon.address, "--json", "jobs", "--all").json()) == jobs
    assert pool.volume_names() == []


def test_a_cancelled_vsphere_job_is_retried_with_the_password_asked_again(
    page: Page, sim: Sim, daemon: DaemonProcess, pool: DirPool, libvirt_conn: Any, tmp_path: Path
) -> None:
    """vm2kvmd keeps no password: the page's Retry asks for it (and the pin) and starts the job
    again through vm2kvmctl; the new job completes."""
    disk = place_flat_disk(sim, VM, "retried", 8 * MiB, random=True)
    secret = tmp_path / "password"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    domain = unique_name("dom")
    pinned = ("--password-file", str(secret), "--thumbprint", sim.info.thumbprint)
    run = ctl(daemon.address, "--json", "migrate", sim.uri, "--vm", VM, *pinned,
              "--pool", pool.name, "--name", domain, "--no-guest-conversion", "--detach")  # fmt: skip
    assert run.status == 0, run.err
    number = run.json()["number"]
    # The daemon holds each job 3 s in its last phase (conftest): time enough to cancel it.
    assert ctl(daemon.address, "cancel", str(number)).status == 0
    try:
        page.open(f"/job/{number}")
        page.wait(lambda: page.text_of(f"job-state-{number}") == "cancelled", f"job {number} cancelled")
        with CmdlineWatch(SECRET) as watch:
            page.find("button", f"Retry job {number}").click()
            page.find("heading", f"Retry job {number}", exact=False)
            page.type_into(page.find("textbox", "Password"), SECRET)
            page.type_into(page.find("textbox", "Pinned SHA-256 thumbprint"), sim.info.thumbprint)
            page.find("button", "Retry").click()
            page.wait(lambda: f"#/job/{number}" not in str(page.driver.current_url), "the new job's page")
            again = job_number_from_url(page)
            page.wait(
                lambda: page.text_of(f"job-state-{again}") == "completed",
                f"job {again} completed",
                timeout=90,
            )
        assert watch.leaks == []
        assert images_equal(disk, target_path(libvirt_conn, domain), fmt_a="vmdk")
        page.open("/")
        assert f"{VM} on {sim.info.host}:{sim.port}" in page.by_id(f"job-row-{again}").text
    finally:
        remove_migrated(libvirt_conn, pool, domain)
