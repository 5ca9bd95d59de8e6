"""The Windows first boot: a batch file run once as SYSTEM before logon, which removes itself.

Mechanism: ``HKLM\\SYSTEM\\Setup`` ``CmdLine`` with ``SetupType`` 2, the hook
Windows Setup itself uses to run a program at the end of boot, as SYSTEM,
before the logon screen; every Windows from XP to 11 has it, and it needs no
binary of ours (virt-v2v's rhsrvany/pvvxsvc are not in Debian).  Windows
leaves the values set, so the script clears them itself at the end.

It can never loop: a run counter in ``%SystemRoot%\\vm2kvm\\runs`` is raised
before anything else, and from the ``MAX_RUNS``-th run on the script only
clears the hook; it never reboots.  A step that has to wait for something
(an adapter with the new MAC to appear) leaves the hook in place for the next
boot, up to the cap.  Every step and its exit code go to
``%SystemRoot%\\vm2kvm\\firstboot.log``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vm2kvmd.core.guest.windows.network import StaticIp, netsh_commands
from vm2kvmd.core.guest.windows.registry import RegKey, dword, sz

MAX_RUNS = 3
GUEST_DIR = "vm2kvm"  # under %SystemRoot%
SCRIPT = "firstboot.cmd"
LOG = "firstboot.log"
DISKPART = "disks.txt"
CMDLINE = f"cmd.exe /c %SystemRoot%\\{GUEST_DIR}\\{SCRIPT}"
_WAIT_TRIES = 30  # x 2 s: how long a run waits for the new NIC to appear


@dataclass(frozen=True)
class FirstBoot:
    pnputil: bool  # Vista and later; XP/2003 find staged drivers through DevicePath instead
    drivers: tuple[
        str, ...
    ]  # staged INF paths relative to %SystemRoot%: "Drivers\\VirtIO\\netkvm\\netkvm.inf"
    guest_agent_msi: str | None  # file name in %SystemRoot%\vm2kvm
    uninstall: tuple[tuple[str, str], ...]  # (product, command)
    static_ips: tuple[StaticIp, ...]
    disks: int  # the VM's disks; more than one brings them online
    # VMware's driver packages (oemN.inf) to delete from the DriverStore after the Tools' uninstall,
    # which often fails off VMware and leaves them; Windows 10 on: pnputil /delete-driver.
    remove_drivers: tuple[str, ...] = ()
    windows10: bool = False


def setup_hook(*, enable: bool) -> RegKey:
    """``SYSTEM\\Setup``: the values that run the script at the next boot (or, disabled, nothing)."""
    if enable:
        return RegKey("SYSTEM", ("Setup",), (sz("CmdLine", CMDLINE), dword("SetupType", 2)))
    return RegKey("SYSTEM", ("Setup",), (sz("CmdLine", ""), dword("SetupType", 0)))


def san_policy_key(control_set: str) -> RegKey:
    """partmgr's SanPolicy 1 (OnlineAll): disks on a new controller come up online, not offline."""
    return RegKey("SYSTEM", (control_set, "Services", "partmgr", "Parameters"), (dword("SanPolicy", 1),))


def diskpart_script(disks: int) -> str:
    lines = ["san policy=OnlineAll"]
    for number in range(disks):
        lines += [f"select disk {number}", "online disk noerr", "attributes disk clear readonly noerr"]
    return "\r\n".join(lines) + "\r\n"


def _step(title: str, command: str) -> list[str]:
    return [
        f'>>"%LOG%" echo --- {title}',
        f'{command} >>"%LOG%" 2>&1',
        '>>"%LOG%" echo exit code %ERRORLEVEL%',
    ]


def delete_driver_command(inf: str, *, windows10: bool) -> str:
    """pnputil's delete of a published driver package, also from devices using it (forced)."""
    return f"pnputil /delete-driver {inf} /uninstall /force" if windows10 else f"pnputil -f -d {inf}"


def _static_ip(number: int, ip: StaticIp) -> list[str]:
    n = f"nic{number}"
    mac = ip.windows_mac
    lines = [
        f'>>"%LOG%" echo --- static IP for {mac} (was {ip.adapter})',
        'set "NIC="',
        "set TRIES=0",
        f":wait_{n}",
        f'for /f "tokens=1 delims=," %%a in (\'getmac /fo csv /nh /v ^| find /i "{mac}"\') do set "NIC=%%~a"',
        f"if defined NIC goto found_{n}",
        "set /a TRIES+=1",
        f"if %TRIES% GEQ {_WAIT_TRIES} goto missing_{n}",
        "ping -n 3 127.0.0.1 >nul",
        f"goto wait_{n}",
        f":missing_{n}",
        f'>>"%LOG%" echo no adapter with MAC {mac} yet: tried again at the next boot',
        "set PENDING=1",
        f"goto next_{n}",
        f":found_{n}",
        '>>"%LOG%" echo adapter "%NIC%"',
    ]
    for command in netsh_commands(ip, "NIC"):
        lines += [f'{command} >>"%LOG%" 2>&1', '>>"%LOG%" echo exit code %ERRORLEVEL%']
    lines.append(f":next_{n}")
    return lines


def script(plan: FirstBoot) -> str:
    """The batch file (CRLF line ends, as cmd.exe expects)."""
    lines = [
        "@echo off",
        "rem vm2kvm first boot: run once as SYSTEM before logon through HKLM\\SYSTEM\\Setup CmdLine;",
        f"rem it removes that hook itself and gives up after {MAX_RUNS} runs, so it can never loop.",
        "setlocal EnableExtensions",
        f'set "V=%SystemRoot%\\{GUEST_DIR}"',
        f'set "LOG=%V%\\{LOG}"',
        "set RUNS=0",
        "set PENDING=",
        'if exist "%V%\\runs" set /p RUNS=<"%V%\\runs"',
        "set /a RUNS=RUNS+1",
        '>"%V%\\runs" echo %RUNS%',
        f'>>"%LOG%" echo === %DATE% %TIME% vm2kvm first boot, run %RUNS% of {MAX_RUNS}',
        f"if %RUNS% GEQ {MAX_RUNS + 1} goto giveup",
    ]
    if plan.pnputil:
        for inf in plan.drivers:
            name = inf.rsplit("\\", 1)[-1]
            lines += _step(f"install driver {name}", f'pnputil -i -a "%SystemRoot%\\{inf}"')
    if plan.guest_agent_msi:
        msi = plan.guest_agent_msi
        lines += _step(
            "install the QEMU guest agent",
            f'msiexec.exe /i "%V%\\{msi}" /qn /norestart /l*v "%V%\\qemu-ga-install.log"',
        )
    for product, command in plan.uninstall:
        lines += _step(f"uninstall {product}", command)
    if plan.pnputil:
        for inf in plan.remove_drivers:
            command = delete_driver_command(inf, windows10=plan.windows10)
            lines += _step(f"remove the VMware driver package {inf}", command)
    for number, ip in enumerate(plan.static_ips):
        lines += _static_ip(number, ip)
    if plan.disks > 1:
        lines += _step("bring every disk online", f'diskpart /s "%V%\\{DISKPART}"')
    lines += [
        "if not defined PENDING goto finish",
        f"if %RUNS% GEQ {MAX_RUNS} goto giveup",
        '>>"%LOG%" echo === steps pending: running again at the next boot',
        "exit /b 0",
        ":giveup",
        f'>>"%LOG%" echo === giving up after {MAX_RUNS} runs: see the lines above',
        ":finish",
        'reg add "HKLM\\SYSTEM\\Setup" /v CmdLine /t REG_SZ /d "" /f >>"%LOG%" 2>&1',
        'reg add "HKLM\\SYSTEM\\Setup" /v SetupType /t REG_DWORD /d 0 /f >>"%LOG%" 2>&1',
        '>>"%LOG%" echo === done',
        "exit /b 0",
    ]
    return "\r\n".join(lines) + "\r\n"


def files(plan: FirstBoot) -> dict[str, str]:
    """Every file the first boot needs in %SystemRoot%\\vm2kvm, by name."""
    out = {SCRIPT: script(plan)}
    if plan.disks > 1:
        out[DISKPART] = diskpart_script(plan.disks)
    return out


def summary(plan: FirstBoot) -> list[str]:
    """One line per scheduled action, for the report."""
    lines = [f"install driver {inf.rsplit(chr(92), 1)[-1]} (pnputil)" for inf in plan.drivers if plan.pnputil]
    if plan.guest_agent_msi:
        lines.append(f"install the QEMU guest agent ({plan.guest_agent_msi})")
    lines += [f"uninstall {product}: {command}" for product, command in plan.uninstall]
    if plan.pnputil:
        lines += [f"remove the VMware driver package {inf} (pnputil)" for inf in plan.remove_drivers]
    for ip in plan.static_ips:
        addresses = ", ".join(f"{a}/{m}" for a, m in ip.addresses)
        lines.append(f"static IP {addresses} on the NIC with MAC {ip.mac} (was {ip.adapter})")
    if plan.disks > 1:
        lines.append(f"bring all {plan.disks} disks online (diskpart, SAN policy OnlineAll)")
    return lines


def staged_inf(driver: str, inf_name: str) -> str:
    """Where a staged driver's INF lives, relative to %SystemRoot%."""
    return f"Drivers\\VirtIO\\{driver}\\{inf_name}"


def staged_dirs(drivers: Sequence[str]) -> list[str]:
    """The DevicePath entries for the staged drivers."""
    return [f"%SystemRoot%\\Drivers\\VirtIO\\{d}" for d in drivers]
