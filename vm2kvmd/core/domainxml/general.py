"""Everything outside ``<devices>``: identity, metadata, memory, CPU, firmware, clock."""

from __future__ import annotations

from lxml import etree

from vm2kvmd.constants import METADATA_NS
from vm2kvmd.core.domainxml._xml import sub
from vm2kvmd.core.hardware.model import Firmware
from vm2kvmd.core.planning.plan import DomainPlan

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# What virt-install writes and virt-manager and cockpit-machines read to know a domain's OS.
LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"


def identity(root: etree._Element, plan: DomainPlan) -> None:
    sub(root, "name", plan.name)
    sub(root, "uuid", plan.uuid)
    if plan.genid:
        # Windows uses the VM generation ID to notice snapshots/clones (AD safeguards).
        sub(root, "genid", plan.genid)
    if plan.title:
        sub(root, "title", plan.title)
    if plan.description:
        sub(root, "description", plan.description)
    metadata = sub(root, "metadata")
    if plan.os_id:
        libosinfo = etree.SubElement(
            metadata, f"{{{LIBOSINFO_NS}}}libosinfo", nsmap={"libosinfo": LIBOSINFO_NS}
        )
        etree.SubElement(libosinfo, f"{{{LIBOSINFO_NS}}}os").set("id", plan.os_id)
    source = etree.SubElement(metadata, f"{{{METADATA_NS}}}source", nsmap={"vm2kvm": METADATA_NS})
    for attr, value in (
        ("path", plan.source_path),
        ("uuid", plan.source_uuid),
        ("vc-uuid", plan.vc_uuid),
        ("guest-os", plan.guest_os or None),
        ("hw-version", str(plan.hw_version) if plan.hw_version is not None else None),
    ):
        if value is not None:
            source.set(attr, value)


def memory_and_cpu(root: etree._Element, plan: DomainPlan) -> None:
    sub(root, "memory", str(plan.memory_mib), unit="MiB")
    sub(root, "currentMemory", str(plan.memory_mib), unit="MiB")
    if plan.memory_locked:
        sub(sub(root, "memoryBacking"), "locked")
    sub(root, "vcpu", str(plan.vcpus), placement="static")


def os_and_features(root: etree._Element, plan: DomainPlan) -> None:
    efi = plan.firmware is Firmware.EFI
    os_el = sub(root, "os", firmware="efi" if efi else None)
    sub(os_el, "type", "hvm", arch="x86_64", machine=plan.machine)
    if efi:
        # libvirt picks the OVMF build from the firmware descriptors.  Saying
        # secure-boot='no' matters: the highest-priority descriptor on Debian is
        # the Microsoft-keys-enrolled one, which would turn secure boot on for a
        # guest that never had it (and refuse its unsigned boot loader).
        firmware = sub(os_el, "firmware")
        if plan.secure_boot:
            sub(firmware, "feature", enabled="yes", name="enrolled-keys")
            sub(firmware, "feature", enabled="yes", name="secure-boot")
        else:
            sub(firmware, "feature", enabled="no", name="secure-boot")
    features = sub(root, "features")
    sub(features, "acpi")  # without ACPI the guest cannot be shut down gracefully
    sub(features, "apic")
    _hyperv(features, plan.hyperv)
    if plan.secure_boot:
        # OVMF's secure boot keeps its variables safe only behind SMM.
        sub(features, "smm", state="on")
    cpu = sub(root, "cpu", mode=plan.cpu_mode, check="partial" if plan.cpu_mode else None)
    sub(cpu, "topology", sockets=plan.sockets, cores=plan.cores, threads=plan.threads)
    clock = sub(root, "clock", offset=plan.clock_offset)
    # virt-manager's defaults: keep guest time right after the host was busy.
    sub(clock, "timer", name="rtc", tickpolicy="catchup")
    sub(clock, "timer", name="pit", tickpolicy="delay")
    sub(clock, "timer", name="hpet", present="no")
    if plan.hyperv == "full":
        # The Hyper-V reference clock: Windows 7/2008 R2 and later keep time with it.
        sub(clock, "timer", name="hypervclock", present="yes")
    sub(root, "on_poweroff", "destroy")
    sub(root, "on_reboot", "restart")
    sub(root, "on_crash", "destroy")


def _hyperv(features: etree._Element, level: str) -> None:
    """Hyper-V enlightenments, as virt-manager gives Windows guests.

    Vista/2008 use the first three (fewer VM exits for spinlocks and the APIC);
    7/2008 R2 and later also the synthetic interrupt controller and timers
    (Windows otherwise polls the emulated HPET/RTC, costing CPU when idle).
    """
    if not level:
        return
    hyperv = sub(features, "hyperv", mode="custom")
    sub(hyperv, "relaxed", state="on")
    sub(hyperv, "vapic", state="on")
    sub(hyperv, "spinlocks", state="on", retries="8191")
    if level == "full":
        for name in ("vpindex", "runtime", "synic", "stimer", "reset", "frequencies"):
            sub(hyperv, name, state="on")


def qemu_commandline(root: etree._Element, plan: DomainPlan) -> None:
    """The guest-visible SMBIOS UUID of a clone.

    libvirt 9.0 rejects ``<sysinfo>`` whose system UUID differs from ``<uuid>``
    ("UUID mismatch between <uuid> and <sysinfo>", src/conf/domain_conf.c);
    QEMU's ``-smbios type=1,uuid=`` given after libvirt's ``-uuid`` wins
    (checked: QMP query-uuid reports it), at the price of a "custom-argv" taint.
    """
    if plan.smbios_uuid is None:
        return
    commandline = etree.SubElement(root, f"{{{QEMU_NS}}}commandline")
    etree.SubElement(commandline, f"{{{QEMU_NS}}}arg").set("value", "-smbios")
    etree.SubElement(commandline, f"{{{QEMU_NS}}}arg").set("value", f"type=1,uuid={plan.smbios_uuid}")
