"""VMware Tools removal, static IPs and the first-boot script (golden files; cmd syntax checked by shape)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.core.guest.windows.factory import LAYOUTS, STATIC_NIC, TOOLS_GUID, VMWARE_TOOLS
from tests.helpers.golden import check_golden
from vm2kvmd.core.guest.windows import firstboot as fb
from vm2kvmd.core.guest.windows.info import InstalledApp, WindowsNic
from vm2kvmd.core.guest.windows.network import StaticIp, netsh_commands, plan_static_ips
from vm2kvmd.core.guest.windows.registry import render_reg
from vm2kvmd.core.guest.windows.tools import plan_tools_removal, quiet_uninstall

DATA = Path(__file__).resolve().parents[3] / "data" / "windows"
MAC = "52:54:00:12:34:56"


# --- VMware Tools ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "command"),
    [
        (VMWARE_TOOLS, f"msiexec.exe /x {TOOLS_GUID} /qn /norestart"),
        (
            replace(VMWARE_TOOLS, uninstall=f"MsiExec.exe /X{TOOLS_GUID.lower()}"),
            f"msiexec.exe /x {TOOLS_GUID} /qn /norestart",
        ),
        # An MSI product without an uninstall string: its key is the product code.
        (replace(VMWARE_TOOLS, uninstall=""), f"msiexec.exe /x {TOOLS_GUID} /qn /norestart"),
        (
            InstalledApp(
                "VMwareTools",
                "VMware Tools",
                uninstall="C:\\x\\setup.exe /u",
                quiet_uninstall="C:\\x\\setup.exe /s /u",
            ),
            "C:\\x\\setup.exe /s /u",
        ),
        (InstalledApp("VMwareTools", "VMware Tools", uninstall="C:\\x\\setup.exe /u"), None),
    ],
)
def test_quiet_uninstall(app: InstalledApp, command: str | None) -> None:
    assert quiet_uninstall(app) == command


def test_tools_removal_plan() -> None:
    info = LAYOUTS["2019"]
    other = InstalledApp(
        "{0000}", "VMware vSphere Client", publisher="VMware, Inc.", uninstall="MsiExec.exe /I{0000}"
    )
    removal = plan_tools_removal(replace(info, apps=(*info.apps, other)))
    assert removal.uninstall == (("VMware Tools", f"msiexec.exe /x {TOOLS_GUID} /qn /norestart"),)
    # Every VMware service and driver not yet disabled; Windows' own services untouched.
    assert [s.name for s in removal.disable] == [
        "VMTools",
        "vmci",
        "vm3dmp",
        "vmxnet3ndis6",
        "VGAuthService",
        "vmtoolsnew",
    ]
    assert removal.not_uninstallable == ()


# --- static IPs --------------------------------------------------------------------------


def test_static_ip_tied_by_order() -> None:
    dhcp = WindowsNic("0008", "{B}", "Intel(R) PRO/1000 MT", "pci\\ven_8086&dev_100f")
    wan = WindowsNic("0001", "{W}", "WAN Miniport (IP)", "ms_ndiswanip")
    plans, notes = plan_static_ips((wan, dhcp, STATIC_NIC), ("00:50:56:00:00:01", "00:50:56:00:00:02"))
    assert notes == []
    assert plans == [
        StaticIp(
            mac="00:50:56:00:00:01",
            adapter="vmxnet3 Ethernet Adapter",
            addresses=(("192.168.10.20", "255.255.255.0"), ("192.168.10.21", "255.255.255.0")),
            gateways=("192.168.10.1",),
            dns=("192.168.10.2", "192.168.10.3"),
        )
    ]
    assert plans[0].windows_mac == "00-50-56-00-00-01"


def test_static_ip_counts_differ() -> None:
    plans, notes = plan_static_ips((STATIC_NIC,), (MAC, "52:54:00:00:00:02"))
    assert [p.mac for p in plans] == [MAC] and "goes to NIC 1" in notes[0].message
    two = (STATIC_NIC, replace(STATIC_NIC, class_key="0009", instance_id="{C}"))
    plans, notes = plan_static_ips(two, (MAC,))
    assert plans == [] and "not re-applied" in notes[0].message and "192.168.10.20" in notes[0].message
    assert plan_static_ips((replace(STATIC_NIC, dhcp=True),), (MAC,)) == ([], [])


def test_netsh_commands() -> None:
    (ip,), _ = plan_static_ips((STATIC_NIC,), (MAC,))
    assert netsh_commands(ip, "NIC") == [
        'netsh interface ip set address name="%NIC%" static 192.168.10.20 255.255.255.0 192.168.10.1 1',
        'netsh interface ip add address name="%NIC%" 192.168.10.21 255.255.255.0',
        'netsh interface ip set dns name="%NIC%" static 192.168.10.2',
        'netsh interface ip add dns name="%NIC%" 192.168.10.3 index=2',
    ]


# --- the script --------------------------------------------------------------------------


def plan_2019() -> fb.FirstBoot:
    (ip,), _ = plan_static_ips((STATIC_NIC,), (MAC,))
    return fb.FirstBoot(
        pnputil=True,
        drivers=(fb.staged_inf("netkvm", "netkvm.inf"), fb.staged_inf("balloon", "balloon.inf")),
        guest_agent_msi="qemu-ga-x86_64.msi",
        uninstall=(("VMware Tools", f"msiexec.exe /x {TOOLS_GUID} /qn /norestart"),),
        static_ips=(ip,),
        disks=2,
    )


def test_script_golden(regenerate: bool) -> None:
    plan = plan_2019()
    files = fb.files(plan)
    assert set(files) == {"firstboot.cmd", "disks.txt"}
    check_golden(
        DATA / "firstboot-2019.cmd",
        files["firstboot.cmd"].replace("\r\n", "\n"),
        regenerate=regenerate,
        test_file=__file__,
    )
    disk = "online disk noerr\r\nattributes disk clear readonly noerr\r\n"
    assert files["disks.txt"] == f"san policy=OnlineAll\r\nselect disk 0\r\n{disk}select disk 1\r\n{disk}"


def test_script_cannot_loop() -> None:
    text = fb.script(plan_2019())
    lines = text.split("\r\n")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    # The counter is raised and written before any step; run 4 only removes the hook.
    counter = lines.index('>"%V%\\runs" echo %RUNS%')
    assert counter < next(i for i, line in enumerate(lines) if "pnputil" in line)
    assert (
        lines[lines.index('>>"%LOG%" echo === %DATE% %TIME% vm2kvm first boot, run %RUNS% of 3') + 1]
        == "if %RUNS% GEQ 4 goto giveup"
    )
    # Pending steps re-run only while runs remain; the hook is always cleared at the end.
    assert "if %RUNS% GEQ 3 goto giveup" in lines
    finish = lines.index(":finish")
    assert lines[finish + 1 : finish + 3] == [
        'reg add "HKLM\\SYSTEM\\Setup" /v CmdLine /t REG_SZ /d "" /f >>"%LOG%" 2>&1',
        'reg add "HKLM\\SYSTEM\\Setup" /v SetupType /t REG_DWORD /d 0 /f >>"%LOG%" 2>&1',
    ]
    assert not any(word in text.lower() for word in ("shutdown", "restart-computer", "/forcerestart"))
    # Every goto has its label.
    labels = {line[1:] for line in lines if line.startswith(":")}
    targets = {line.split("goto ", 1)[1].strip() for line in lines if "goto " in line}
    assert targets <= labels


def test_xp_script_has_no_pnputil_and_no_diskpart() -> None:
    plan = replace(plan_2019(), pnputil=False, guest_agent_msi=None, disks=1)
    text = fb.script(plan)
    assert "pnputil" not in text and "diskpart" not in text and "msiexec.exe /i" not in text
    assert set(fb.files(plan)) == {"firstboot.cmd"}
    assert fb.summary(plan) == [
        f"uninstall VMware Tools: msiexec.exe /x {TOOLS_GUID} /qn /norestart",
        "static IP 192.168.10.20/255.255.255.0, 192.168.10.21/255.255.255.0 "
        f"on the NIC with MAC {MAC} (was vmxnet3 Ethernet Adapter)",
    ]


def test_setup_hook_and_san_policy() -> None:
    text = render_reg([fb.setup_hook(enable=True), fb.san_policy_key("ControlSet001")])
    assert text.split("\n")[2:8] == [
        "[HKEY_LOCAL_MACHINE\\SYSTEM\\Setup]",
        '"CmdLine"="cmd.exe /c %SystemRoot%\\\\vm2kvm\\\\firstboot.cmd"',
        '"SetupType"=dword:00000002',
        "",
        "[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\partmgr\\Parameters]",
        '"SanPolicy"=dword:00000001',
    ]


def test_vmware_driver_packages_are_deleted_after_the_uninstall() -> None:
    plan = replace(plan_2019(), remove_drivers=("oem5.inf", "oem12.inf"), windows10=True)
    lines = fb.script(plan).split("\r\n")
    uninstall = lines.index(f'msiexec.exe /x {TOOLS_GUID} /qn /norestart >>"%LOG%" 2>&1')
    first = lines.index('>>"%LOG%" echo --- remove the VMware driver package oem5.inf')
    assert uninstall < first
    assert lines[first + 1 : first + 4] == [
        'pnputil /delete-driver oem5.inf /uninstall /force >>"%LOG%" 2>&1',
        '>>"%LOG%" echo exit code %ERRORLEVEL%',
        '>>"%LOG%" echo --- remove the VMware driver package oem12.inf',
    ]
    assert "remove the VMware driver package oem12.inf (pnputil)" in fb.summary(plan)
    # Windows 8/8.1 pnputil has only the old syntax; XP/2003 have no pnputil at all.
    assert 'pnputil -f -d oem5.inf >>"%LOG%" 2>&1' in fb.script(replace(plan, windows10=False))
    legacy = replace(plan, pnputil=False)
    assert "oem5.inf" not in fb.script(legacy) and not any("oem5" in s for s in fb.summary(legacy))
