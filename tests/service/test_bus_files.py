"""The files installed next to vm2kvmd: bus policy, activation, systemd unit, polkit actions.

The bus policy is tested on a private bus configured like the system bus
(default deny) that includes ``dbus/org.vm2kvm.Daemon1.conf``.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.harness.services import PrivateBus
from tests.service.support import BusClient
from tests.service.test_daemon_process import finish, running, wait_for_name
from vm2kvmd.constants import BUS_NAME, MANAGER_IFACE, MANAGER_PATH

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_activation_file_names_the_unit() -> None:
    service = ini(REPO / "dbus/org.vm2kvm.Daemon1.service")["D-BUS Service"]
    assert service["Name"] == BUS_NAME
    assert service["SystemdService"] == "vm2kvmd.service"
    assert service["User"] == "root"
    assert service["Exec"].split()[1:] == ["--bus", "system"]


def test_systemd_unit_is_a_dbus_service() -> None:
    unit = ini(REPO / "systemd/vm2kvmd.service")["Service"]
    assert unit["Type"] == "dbus"
    assert unit["BusName"] == BUS_NAME
    assert unit["ExecStart"].split()[0].endswith("/vm2kvmd")
    assert unit["ExecStart"].split()[1:] == ["--bus", "system"]


def test_polkit_actions() -> None:
    root = ET.parse(REPO / "dbus/org.vm2kvm.policy").getroot()
    actions = {a.get("id"): a for a in root.iter("action")}
    assert set(actions) == {
        "org.vm2kvm.migrate",
        "org.vm2kvm.inspect",
        "org.vm2kvm.cancel-own-job",
        "org.vm2kvm.manage-all-jobs",
    }
    for action in actions.values():
        assert action.findtext("description")
        assert action.findtext("message")
        assert action.find("defaults") is not None
    migrate = actions["org.vm2kvm.migrate"].find("defaults")
    assert migrate is not None
    assert {child.tag: child.text for child in migrate} == {
        "allow_any": "auth_admin_keep",
        "allow_inactive": "auth_admin_keep",
        "allow_active": "auth_admin_keep",
    }


# --- the bus policy on a system-like bus ---------------------------------------


@pytest.fixture(scope="module")
def system_bus() -> Iterator[PrivateBus]:
    with PrivateBus(kind="system", include_files=[REPO / "dbus/org.vm2kvm.Daemon1.conf"]) as bus:
        assert bus.tmpdir is not None
        os.chmod(bus.tmpdir, 0o755)  # so an unprivileged user can reach the socket
        yield bus


@pytest.fixture
async def client(system_bus: PrivateBus) -> AsyncIterator[BusClient]:
    bus_client = await BusClient.connect(system_bus.address)
    yield bus_client
    await bus_client.close()


async def as_nobody(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``dbus-send`` on the system bus as an unprivileged user."""
    proc = await asyncio.create_subprocess_exec(
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "dbus-send",
        "--system",
        "--print-reply",
        *args,
        env={"DBUS_SYSTEM_BUS_ADDRESS": address, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


needs_tools = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("dbus-send")),
    reason="needs root, setpriv and dbus-send",
)


@needs_tools
async def test_root_owns_the_name_and_anyone_may_call(system_bus: PrivateBus, client: BusClient) -> None:
    async with running("DBUS_SYSTEM_BUS_ADDRESS", system_bus.address, "--bus", "system") as daemon:
        await wait_for_name(client, daemon)
        call = await as_nobody(
            system_bus.address, f"--dest={BUS_NAME}", MANAGER_PATH, f"{MANAGER_IFACE}.GetJobs"
        )
        props = await as_nobody(
            system_bus.address,
            f"--dest={BUS_NAME}",
            MANAGER_PATH,
            "org.freedesktop.DBus.Properties.Get",
            f"string:{MANAGER_IFACE}",
            "string:Version",
        )
        daemon.terminate()
        status, err = await finish(daemon)
    assert call.returncode == 0, call.stderr
    assert "array [" in call.stdout
    assert props.returncode == 0, props.stderr
    assert status == 0, err


@needs_tools
async def test_others_may_not_own_the_name(system_bus: PrivateBus) -> None:
    result = await as_nobody(
        system_bus.address,
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
        f"string:{BUS_NAME}",
        "uint32:4",
    )
    assert result.returncode != 0
    assert "AccessDenied" in result.stderr
