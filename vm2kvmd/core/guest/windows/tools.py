"""VMware Tools in a Windows guest: how to uninstall it, and which of its services to disable offline.

The Tools' MSI uninstaller often refuses to run off VMware (error 1603 is
the common complaint), so uninstalling at first boot is not enough: every
VMware service and driver is also set to ``Start`` 4 (disabled) offline,
before the guest ever boots on KVM.  Nothing VMware can then start even when
the uninstall fails; the first boot still tries it so the files and the
"Programs and Features" entry go away where it works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vm2kvmd.core.guest.windows.info import InstalledApp, Service, WindowsInfo

# Services and drivers VMware Tools installs (VMware's own names; case-insensitive).
# pvscsi and vmxnet3 ship inside Windows 2016+ too, but nothing on KVM binds them.
VMWARE_SERVICES = frozenset(
    name.lower()
    for name in (
        "VMTools",
        "VGAuthService",
        "vmvss",
        "VMUpgradeHelper",
        "vmStatsProvider",
        "vm3dservice",
        "vm3dmp",
        "vm3dmp_loader",
        "vm3dmp-debug",
        "vm3dmp-stats",
        "vmx_svga",
        "vmci",
        "vmhgfs",
        "vmmemctl",
        "vmmouse",
        "vmusbmouse",
        "vmrawdsk",
        "vmxnet",
        "vmxnet3ndis5",
        "vmxnet3ndis6",
        "vsock",
        "vsepflt",
        "vnetWFP",
        "vnetflt",
        "vmgencounter",
        "pvscsi",
        "glxgi",
        "giappdef",
    )
)
_MSI_PRODUCT = re.compile(r"\{[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}")


@dataclass(frozen=True)
class ToolsRemoval:
    """What happens to VMware Tools: the quiet uninstall commands and the services disabled."""

    uninstall: tuple[tuple[str, str], ...]  # (product name, command) run at first boot
    disable: tuple[Service, ...]  # set to Start 4 offline
    not_uninstallable: tuple[str, ...]  # products found with no quiet uninstall we can build


def is_vmware_tools(app: InstalledApp) -> bool:
    return "vmware tools" in app.name.lower() and (not app.publisher or "vmware" in app.publisher.lower())


def quiet_uninstall(app: InstalledApp) -> str | None:
    """The product's own uninstall, quiet and without reboot; None when there is none to build.

    An MSI product (``MsiExec.exe /I{GUID}`` or ``/X{GUID}``, or a ``{GUID}``
    key) is removed with ``msiexec /x {GUID} /qn /norestart``; otherwise the
    product's QuietUninstallString is used as it is.
    """
    for text in (app.uninstall, app.key):
        if text == app.key or "msiexec" in text.lower():
            match = _MSI_PRODUCT.search(text)
            if match:
                return f"msiexec.exe /x {match.group(0).upper()} /qn /norestart"
    return app.quiet_uninstall or None


def is_vmware_service(service: Service) -> bool:
    if service.name.lower() in VMWARE_SERVICES:
        return True
    # Anything run from the Tools' install directory (new components of later releases).
    return "\\vmware\\vmware tools\\" in service.image_path.lower()


def plan_tools_removal(info: WindowsInfo) -> ToolsRemoval:
    uninstall: list[tuple[str, str]] = []
    missing: list[str] = []
    for app in info.apps:
        if not is_vmware_tools(app):
            continue
        command = quiet_uninstall(app)
        if command is None:
            missing.append(app.name)
        elif (app.name, command) not in uninstall:
            uninstall.append((app.name, command))
    disable = tuple(s for s in info.services if is_vmware_service(s) and s.start != 4)
    return ToolsRemoval(tuple(uninstall), disable, tuple(missing))
