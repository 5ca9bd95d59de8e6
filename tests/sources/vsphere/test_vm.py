"""Every VM of VMware's vSphere simulator (ESX and VPX mode), read through pyvmomi into a
``SourceVM``, planned, rendered and defined in libvirt; then VMs reconfigured with
``ReconfigVM_Task`` (a disk on a second controller, a vmxnet3 NIC on a distributed port group,
EFI, an independent disk, a serial port, a snapshot) and read again.

One simulator per mode for the module; tests that change a VM use their own VM.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from testbed.vcsim import PASSWORD, USER, Vcsim
from tests.core.domainxml.test_domainxml import define_everywhere, one, parse, xp
from tests.helpers.golden import check_golden
from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.hardware.model import Bus, Firmware, PortKind, SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import PlanOptions
from vm2kvmd.core.report import hardware_rows
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.planning import InspectResult
from vm2kvmd.sources.vsphere.vm import load_source_vm, read_vm

pytestmark = pytest.mark.slow  # starts the simulator (and builds it the first time)

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "vsphere"
OPTS = PlanOptions(
    target_dir="/var/lib/libvirt/images",
    new_uuid="00000000-0000-4000-8000-000000000001",
    networks=(("VM Network", "default"), ("DC0_DVPG0", "default")),
)
# pyVmomi's data object constructors carry no annotations; through Any they stay callable in strict mypy.
_dev: Any = vim.vm.device
_vim: Any = vim


@dataclass
class Sim:
    si: vim.ServiceInstance
    content: Any  # vim.ServiceInstanceContent

    def vms(self) -> list[vim.VirtualMachine]:
        view = self.content.viewManager.CreateContainerView(
            self.content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            return sorted(view.view, key=lambda vm: vm.name)
        finally:
            view.Destroy()

    def vm(self, name: str) -> vim.VirtualMachine:
        return next(vm for vm in self.vms() if vm.name == name)

    def load(self, vm: vim.VirtualMachine) -> SourceVM:
        return load_source_vm(
            vm, self.content.propertyCollector, source_path=f"vsphere://simulator/{vm._moId}"
        )


def _simulator(mode: str) -> Iterator[Sim]:
    with Vcsim(mode) as info:
        context = ssl.create_default_context(cafile=info.ca_file)
        si = SmartConnect(host=info.host, port=info.port, user=USER, pwd=PASSWORD, sslContext=context)
        try:
            yield Sim(si, si.RetrieveContent())
        finally:
            Disconnect(si)


@pytest.fixture(scope="module")
def esx() -> Iterator[Sim]:
    yield from _simulator("esx")


@pytest.fixture(scope="module")
def vpx() -> Iterator[Sim]:
    yield from _simulator("vpx")


def render(vm: SourceVM) -> str:
    xml = render_domain_xml(plan_domain(vm, OPTS, GuestCaps.unconverted()))
    assert isinstance(xml, str)
    return xml


def check_against_api(sim: Sim, vm: vim.VirtualMachine, source: SourceVM) -> None:
    """What the API says about ``vm``, asked directly, is what the model holds."""
    config = vm.config
    assert config is not None
    assert source.display_name == vm.name
    assert source.uuid_bios == config.uuid
    assert source.vc_uuid == config.instanceUuid
    assert source.cpu.vcpus == config.hardware.numCPU
    assert source.memory.size_mib == config.hardware.memoryMB
    api_disks = [d for d in config.hardware.device if isinstance(d, _dev.VirtualDisk)]
    assert sorted(d.file_name for d in source.disks) == sorted(
        str(d.backing.fileName)
        for d in api_disks
        if isinstance(d.backing, _dev.VirtualDevice.FileBackingInfo)
    )
    for disk in source.disks:
        assert disk.remote is not None and disk.problem_code is None
        assert disk.remote.datastore == "LocalDS_0"
        assert disk.capacity > 0
    api_macs = [d.macAddress for d in config.hardware.device if isinstance(d, _dev.VirtualEthernetCard)]
    assert [n.mac for n in source.nics] == api_macs


@pytest.mark.parametrize("mode", ["esx", "vpx"])
def test_every_vm_plans_and_defines(mode: str, request: pytest.FixtureRequest, libvirt_conn: Any) -> None:
    sim: Sim = request.getfixturevalue(mode)
    vms = sim.vms()
    assert len(vms) >= 2
    for vm in vms:
        source = sim.load(vm)
        check_against_api(sim, vm, source)
        assert source.guest_os == "other"
        assert source.hw_version == 13
        assert source.controllers[0].model == "pvscsi"
        network = "VM Network" if mode == "esx" else "DC0_DVPG0"
        assert [n.source_network for n in source.nics] == [network]
        if mode == "vpx":
            assert source.nics[0].dvs_port_group is not None
        xml = render(source)
        root = parse(xml)
        assert one(root, "/domain/name/text()") == vm.name
        # Unconverted guest: the plan puts disks on SATA whatever the source bus.
        assert xp(root, "/domain/devices/disk[@device='disk']/source/@file") == [
            "/var/lib/libvirt/images/" + d.volume_name
            for d in plan_domain(source, OPTS, GuestCaps.unconverted()).disks
        ]
        seen = define_everywhere(libvirt_conn, xml)
        assert xp(seen, "/domain/devices/interface/mac/@address") == [n.mac for n in source.nics]


def _add(device: Any, *, create: bool = False) -> Any:
    return _dev.VirtualDeviceSpec(operation="add", device=device, fileOperation="create" if create else None)


def test_reconfigured_vm(vpx: Sim, libvirt_conn: Any) -> None:
    vm = vpx.vm("DC0_H0_VM1")
    WaitForTask(vm.PowerOffVM_Task())
    view = vpx.content.viewManager.CreateContainerView(
        vpx.content.rootFolder, [vim.dvs.DistributedVirtualPortgroup], True
    )
    portgroup = next(pg for pg in view.view if pg.name == "DC0_DVPG0")
    view.Destroy()
    switch = portgroup.config.distributedVirtualSwitch
    WaitForTask(
        vm.ReconfigVM_Task(_vim.vm.ConfigSpec(deviceChange=[_add(_dev.VirtualAHCIController(key=-1))]))
    )
    assert vm.config is not None
    sata_key = next(d.key for d in vm.config.hardware.device if isinstance(d, _dev.VirtualAHCIController))
    data = _dev.VirtualDisk(
        key=-2,
        controllerKey=sata_key,
        unitNumber=0,
        capacityInKB=2048,
        backing=_dev.VirtualDisk.FlatVer2BackingInfo(
            fileName="[LocalDS_0] DC0_H0_VM1/data.vmdk",
            diskMode="independent_persistent",
            thinProvisioned=False,
            eagerlyScrub=True,
        ),
    )
    nic = _dev.VirtualVmxnet3(
        key=-3,
        addressType="manual",
        macAddress="00:50:56:12:34:56",
        backing=_dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=_vim.dvs.PortConnection(portgroupKey=portgroup.key, switchUuid=switch.uuid)
        ),
    )
    serial = _dev.VirtualSerialPort(
        key=-4,
        yieldOnPoll=True,
        backing=_dev.VirtualSerialPort.URIBackingInfo(serviceURI="telnet://:7001", direction="server"),
    )
    spec = _vim.vm.ConfigSpec(
        deviceChange=[_add(data, create=True), _add(nic), _add(serial)],
        firmware="efi",
        numCPUs=4,
        numCoresPerSocket=2,
        memoryMB=2048,
        annotation="reconfigured\nline <2> & more",
        guestId="debian10_64Guest",
    )
    WaitForTask(vm.ReconfigVM_Task(spec))
    WaitForTask(vm.CreateSnapshot_Task("before migration", "", False, False))

    config = read_vm(vm, vpx.content.propertyCollector)
    assert (config.power_state, config.snapshot_count, config.current_snapshot) == (
        "poweredOff",
        1,
        "before migration",
    )
    source = vpx.load(vm)
    check_against_api(vpx, vm, source)
    assert (source.firmware, source.guest_os, source.annotation) == (
        Firmware.EFI,
        "debian10-64",
        "reconfigured\nline <2> & more",
    )
    assert (source.cpu.vcpus, source.cpu.cores_per_socket, source.memory.size_mib) == (4, 2, 2048)
    assert [(c.bus, c.index, c.model) for c in source.controllers] == [
        (Bus.SCSI, 0, "pvscsi"),
        (Bus.SATA, 0, None),
        (Bus.IDE, 0, None),
        (Bus.IDE, 1, None),
    ]
    first, second = source.disks
    assert (first.address.key, second.address.key) == ("scsi0:0", "sata0:0")
    assert second.mode == "independent-persistent"
    assert second.remote is not None
    assert (second.remote.capacity, second.remote.thin) == (2048 * 1024, False)
    added = next(n for n in source.nics if n.mac == "00:50:56:12:34:56")
    assert (added.model, added.address_type, added.source_network, added.dvs_port_group) == (
        "vmxnet3",
        "static",
        "DC0_DVPG0",
        portgroup.key,
    )
    (port,) = source.serials
    assert port.kind is PortKind.NETWORK and port.endpoint is not None and port.endpoint.port == 7001
    notes = [str(n) for n in source.notes]
    assert any("1 snapshot(s)" in n and "'before migration'" in n for n in notes)
    assert any("independent disk" in n for n in notes)

    xml = render(source)
    seen = define_everywhere(libvirt_conn, xml)
    assert one(seen, "/domain/os/@firmware") == "efi"
    assert one(seen, "/domain/vcpu/text()") == "4"
    assert one(seen, "/domain/description/text()").endswith("\n\nreconfigured\nline <2> & more")
    assert sorted(xp(seen, "/domain/devices/interface/mac/@address")) == sorted(
        n.mac or "" for n in source.nics
    )
    assert len(xp(seen, "/domain/devices/disk[@device='disk']")) == 2
    assert xp(seen, "/domain/devices/serial/source/@service") == ["7001"]


def test_snapshot_chain_drives_sound_and_usb(vpx: Sim, libvirt_conn: Any) -> None:
    vm = vpx.vm("DC0_C0_RP0_VM0")
    WaitForTask(vm.PowerOffVM_Task())
    view = vpx.content.viewManager.CreateContainerView(vpx.content.rootFolder, [vim.Datastore], True)
    (datastore,) = view.view
    view.Destroy()
    # The simulator checks that a disk's files exist; an ISO or floppy image it takes on trust.
    folder = Path(datastore.info.url) / vm.name
    for name in ("base.vmdk", "base-flat.vmdk", "base-000001.vmdk", "base-000001-flat.vmdk"):
        (folder / name).write_bytes(b"")
    assert vm.config is not None
    devices = vm.config.hardware.device
    scsi = next(d.key for d in devices if isinstance(d, _dev.ParaVirtualSCSIController))
    ide = next(d.key for d in devices if isinstance(d, _dev.VirtualIDEController))
    flat = _dev.VirtualDisk.FlatVer2BackingInfo
    delta = _dev.VirtualDisk(
        key=-2,
        controllerKey=scsi,
        unitNumber=3,
        capacityInKB=4096,
        backing=flat(
            fileName=f"[LocalDS_0] {vm.name}/base-000001.vmdk",
            diskMode="persistent",
            parent=flat(fileName=f"[LocalDS_0] {vm.name}/base.vmdk", diskMode="persistent"),
        ),
    )
    iso = _dev.VirtualCdrom(
        key=-3,
        controllerKey=ide,
        unitNumber=1,
        backing=_dev.VirtualCdrom.IsoBackingInfo(fileName=f"[LocalDS_0] {vm.name}/boot.iso"),
    )
    floppy = _dev.VirtualFloppy(
        key=-4, backing=_dev.VirtualFloppy.ImageBackingInfo(fileName=f"[LocalDS_0] {vm.name}/a.flp")
    )
    added = [
        delta,
        iso,
        floppy,
        _dev.VirtualHdAudioCard(key=-5),
        _dev.VirtualUSBXHCIController(key=-6),
        _dev.VirtualUSBController(key=-7, ehciEnabled=True),
    ]
    WaitForTask(vm.ReconfigVM_Task(_vim.vm.ConfigSpec(deviceChange=[_add(d) for d in added])))
    WaitForTask(vm.CreateSnapshot_Task("one", "", False, False))
    WaitForTask(vm.CreateSnapshot_Task("two", "", False, False))

    source = vpx.load(vm)
    check_against_api(vpx, vm, source)
    chained = next(d for d in source.disks if d.address.key == "scsi0:3")
    assert chained.remote is not None
    assert chained.remote.layers == (
        f"[LocalDS_0] {vm.name}/base-000001.vmdk",
        f"[LocalDS_0] {vm.name}/base.vmdk",
    )
    assert chained.capacity == 4096 * 1024
    assert [(d.address.key, d.kind.value) for d in source.cdroms] == [
        ("scsi0:1", "host"),
        ("ide0:1", "empty"),
    ]
    assert [(d.address.key, d.kind.value) for d in source.floppies] == [("floppy0", "empty")]
    assert source.sound is not None and source.sound.model == "hdaudio"
    assert (source.usb.uhci, source.usb.ehci, source.usb.xhci) == (True, True, True)
    notes = [str(n) for n in source.notes]
    assert any("current state read through 2 files" in n for n in notes)
    assert any("2 snapshot(s)" in n and "'two'" in n for n in notes)
    assert any("boot.iso is on the datastore and not copied" in n for n in notes)
    assert any("a.flp is on the datastore and not copied" in n for n in notes)
    seen = define_everywhere(libvirt_conn, render(source))
    assert len(xp(seen, "/domain/devices/disk[@device='disk']")) == 2
    assert xp(seen, "/domain/devices/sound/@model") == ["ich9"]


def test_powered_on_vm_is_read_as_such(esx: Sim) -> None:
    vm = esx.vm("ha-host_VM0")
    config = read_vm(vm, esx.content.propertyCollector)
    assert config.power_state == "poweredOn"
    assert config.snapshot_count == 0
    assert config.moid == vm._moId


def test_inspect_json_and_report_show_the_remote_disk(esx: Sim) -> None:
    source = esx.load(esx.vm("ha-host_VM0"))
    plan = plan_domain(source, OPTS, GuestCaps.unconverted())
    data = InspectResult(source, plan, render_domain_xml(plan), plan.notes).to_json()
    (disk,) = data["disks"]
    assert disk["file"] == "[LocalDS_0] ha-host_VM0/disk1.vmdk"
    assert (disk["missing"], disk["virtual_size"]) == (False, source.disks[0].capacity)
    assert disk["remote"] == {
        "datastore": "LocalDS_0",
        "layers": ["[LocalDS_0] ha-host_VM0/disk1.vmdk"],
        "thin": True,
    }
    row = next(r for r in hardware_rows(source, plan) if r["key"] == "disk:scsi0:0")
    assert row["source"].startswith("[LocalDS_0] ha-host_VM0/disk1.vmdk, 1.0 MiB, SCSI pvscsi")
    assert "MISSING" not in row["source"]


def test_vm_deleted_meanwhile_is_source_not_found(vpx: Sim) -> None:
    vm = vpx.vm("DC0_C0_RP0_VM1")
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())
    with pytest.raises(Vm2kvmError) as caught:
        read_vm(vm, vpx.content.propertyCollector)
    assert caught.value.code is ErrorCode.SOURCE_NOT_FOUND
    assert vm._moId in caught.value.message


def test_golden_domain_xml(esx: Sim, regenerate: bool, libvirt_conn: Any) -> None:
    """ha-host_VM1 as the simulator describes it; run with ``--regenerate`` to rewrite."""
    golden = DATA_DIR / "ha-host_VM1.xml"
    xml = render(esx.load(esx.vm("ha-host_VM1")))
    check_golden(golden, xml, regenerate=regenerate, test_file=__file__)
    define_everywhere(libvirt_conn, xml)
