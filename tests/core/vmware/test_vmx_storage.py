"""SourceVM storage from VMX: controllers, disks, CD-ROM and floppy drives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.vmware.vmx_support import BASE, build, good_disk, note_text
from vm2kvmd.core.hardware.model import Bus, DiskChain, MediaKind, Note
from vm2kvmd.core.vmware.vmx import parse_vmx
from vm2kvmd.core.vmware.vmx_hardware import build_source_vm
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.paths import local_resolver


def test_disk_order_and_loader_keys(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def record(path: str, key: str) -> DiskChain:
        seen.append((Path(path).name, key))
        return good_disk()(path, key)

    vm = build(
        tmp_path,
        BASE + 'nvme0.present = "TRUE"\nnvme0:0.present = "TRUE"\nnvme0:0.fileName = "n.vmdk"\n'
        'ide0:0.present = "TRUE"\nide0:0.fileName = "i.vmdk"\n'
        'scsi0.present = "TRUE"\nscsi0.virtualDev = "pvscsi"\n'
        'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "s1.vmdk"\n'
        'sata0.present = "TRUE"\nsata0:0.present = "TRUE"\nsata0:0.fileName = "a.vmdk"\n'
        'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "s0.vmdk"\nscsi0:0.writeThrough = "TRUE"\n',
        record,
    )
    assert [d.address.key for d in vm.disks] == ["scsi0:0", "scsi0:1", "sata0:0", "ide0:0", "nvme0:0"]
    assert all(d.chain is not None and d.problem is None for d in vm.disks)
    assert vm.disks[0].write_through and not vm.disks[1].write_through
    assert ("s0.vmdk", "scsi0:0.fileName") in seen and len(seen) == 5
    assert [c.bus for c in vm.controllers] == [Bus.SCSI, Bus.SATA, Bus.IDE, Bus.NVME]


def test_scsi_units_by_hardware_version(tmp_path: Path) -> None:
    units = "".join(
        f'scsi0:{u}.present = "TRUE"\nscsi0:{u}.fileName = "d{u}.vmdk"\n' for u in (6, 7, 8, 15, 16, 63)
    )
    hw11 = BASE + 'virtualHW.version = "11"\nscsi0.present = "TRUE"\n'
    old = build(tmp_path, hw11 + units.split("scsi0:16")[0])
    assert [d.address.unit for d in old.disks] == [6, 8, 15]
    assert "scsi0:7.present: scsi0:7: unit 7 is the SCSI controller itself" in note_text(old)
    new = build(tmp_path, BASE + 'virtualHW.version = "13"\nscsi0.present = "TRUE"\n' + units)
    assert [d.address.unit for d in new.disks] == [6, 8, 15, 16, 63]
    # Beyond the hardware version's range: not a VM VMware runs, refused naming the key.
    with pytest.raises(Vm2kvmError) as exc:
        build(tmp_path, hw11 + units)
    assert exc.value.code is ErrorCode.HARDWARE_LIMIT
    assert exc.value.key == "scsi0:16.present"
    assert "at most 4 SCSI controllers (scsi0-3) with units scsiN:0-15 each at hardware version 11" in str(
        exc.value
    )
    with pytest.raises(Vm2kvmError) as exc:
        build(tmp_path, BASE + 'virtualHW.version = "13"\nscsi0.present = "TRUE"\nscsi0:64.present = "TRUE"')
    assert (exc.value.code, exc.value.key) == (ErrorCode.HARDWARE_LIMIT, "scsi0:64.present")


def test_controllers_absent_or_out_of_range(tmp_path: Path) -> None:
    vm = build(
        tmp_path,
        BASE + 'scsi1.present = "FALSE"\nscsi1:0.present = "TRUE"\nscsi1:0.fileName = "x.vmdk"\n'
        'scsi4.present = "FALSE"\nscsi4:0.present = "FALSE"\nscsi4:0.fileName = "y.vmdk"\n'
        'sata0:0.present = "TRUE"\nsata0:0.fileName = "z.vmdk"\n'
        'scsi0:2.present = "FALSE"\nscsi0:2.fileName = "off.vmdk"\n',
    )
    assert [d.address.key for d in vm.disks] == ["sata0:0"]
    notes = note_text(vm)
    assert "scsi1.present: devices on scsi1 ignored" in notes
    with pytest.raises(Vm2kvmError) as exc:
        build(tmp_path, BASE + 'scsi4.present = "TRUE"\nscsi4:0.present = "TRUE"\nscsi4:0.fileName = "y"')
    assert (exc.value.code, exc.value.key) == (ErrorCode.HARDWARE_LIMIT, "scsi4.present")
    assert "at most 4 SCSI controllers (scsi0-3)" in exc.value.message
    assert "sata0.present: sata0.present is missing; controller assumed present" in notes


def test_scsi_model_inference(tmp_path: Path) -> None:
    disk = 'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "d.vmdk"\n'
    from_chain = build(tmp_path, BASE + disk, good_disk("legacyESX"))
    assert from_chain.controllers[0].model == "buslogic"
    assert "from the adapter type of its first disk" in note_text(from_chain)
    for guest, model in (
        ("winxppro", "buslogic"),
        ("windows9-64", "lsisas1068"),
        ("debian12-64", "lsilogic"),
    ):
        vm = build(tmp_path, BASE.replace('"other"', f'"{guest}"') + disk)
        assert vm.controllers[0].model == model, guest
    odd = build(tmp_path, BASE + disk + 'scsi0.virtualDev = "megaraid"\nscsi0.pciSlotNumber = "-1"\n')
    assert (odd.controllers[0].model, odd.controllers[0].pci_slot) == ("megaraid", None)
    assert "unknown SCSI controller model 'megaraid'" in note_text(odd)


def test_disk_problems_keep_inspect_working(tmp_path: Path) -> None:
    def broken(path: str, key: str) -> DiskChain:
        raise OSError(5, "Input/output error")

    vm = build(
        tmp_path,
        BASE + 'scsi0.present = "TRUE"\nscsi0.virtualDev = "lsilogic"\n'
        'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "../elsewhere/d.vmdk"\n'
        'scsi0:1.present = "TRUE"\nscsi0:1.deviceType = "scsi-hardDisk"\nscsi0:1.fileName = ""\n'
        'scsi0:2.present = "TRUE"\nscsi0:2.fileName = "[san01] vm/d.vmdk"\n'
        'scsi0:3.present = "TRUE"\nscsi0:3.fileName = "io.vmdk"\nscsi0:3.mode = "weird"\n',
        broken,
    )
    codes = [d.problem_code for d in vm.disks]
    assert codes == [
        ErrorCode.PATH_OUTSIDE_SOURCE,
        ErrorCode.INVALID_VALUE,
        ErrorCode.INVALID_VALUE,
        ErrorCode.INVALID_DISK,
    ]
    assert all(d.missing and d.problem for d in vm.disks)
    assert "leads outside the VM directory" in (vm.disks[0].problem or "")
    assert "san01" in (vm.disks[2].problem or "")
    assert "Input/output error" in (vm.disks[3].problem or "") and vm.disks[3].mode == "persistent"
    assert vm.disks[3].path == str(tmp_path / "io.vmdk")


def test_external_paths_and_datastores_when_allowed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    vm_dir = tmp_path / "vm"
    store.mkdir()
    vm_dir.mkdir()
    note = Note("extent looked up elsewhere", "scsi0:0.fileName")
    vmx = parse_vmx(
        (
            BASE + 'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "../outside.vmdk"\n'
            'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "[san01] d.vmdk"\n'
        ).encode(),
        str(vm_dir / "vm.vmx"),
    )
    resolver = local_resolver(str(vm_dir), datastores={"san01": str(store)}, allow_external=True)
    vm = build_source_vm(vmx, resolver, good_disk(notes=(note,)))
    assert [d.path for d in vm.disks] == [str(tmp_path / "outside.vmdk"), str(store / "d.vmdk")]
    assert "following path outside the VM directory" in note_text(vm)
    assert note in vm.notes


@pytest.mark.parametrize(
    ("lines", "kind", "file_name", "noted"),
    [
        ('scsi0:0.fileName = "d.vmdk"', "disk", "d.vmdk", False),
        ('scsi0:0.fileName = "Install.ISO"', MediaKind.IMAGE, "Install.ISO", True),
        ('scsi0:0.fileName = "auto detect"', MediaKind.HOST, "auto detect", True),
        ('scsi0:0.fileName = "/dev/sr0"', MediaKind.HOST, "/dev/sr0", True),
        ('scsi0:0.fileName = ""', MediaKind.EMPTY, None, True),
        ('scsi0:0.deviceType = "cdrom-raw"\nscsi0:0.fileName = ""', MediaKind.HOST, None, False),
        (
            'scsi0:0.deviceType = "cdrom-image"\nscsi0:0.fileName = "auto detect"',
            MediaKind.HOST,
            "auto detect",
            False,
        ),
        ('scsi0:0.deviceType = "atapi-cdrom"\nscsi0:0.clientDevice = "TRUE"', MediaKind.EMPTY, None, True),
        ('scsi0:0.deviceType = "weird"\nscsi0:0.fileName = "w.vmdk"', "disk", "w.vmdk", True),
        ('scsi0:0.deviceType = "scsi-passthru"\nscsi0:0.fileName = "/dev/sg2"', None, None, True),
    ],
)
def test_device_type(tmp_path: Path, lines: str, kind: object, file_name: str | None, noted: bool) -> None:
    vm = build(
        tmp_path,
        BASE
        + 'scsi0.present = "TRUE"\nscsi0.virtualDev = "pvscsi"\nscsi0:0.present = "TRUE"\n'
        + lines
        + "\n",
    )
    if kind == "disk":
        assert [d.file_name for d in vm.disks] == [file_name] and vm.cdroms == ()
    elif kind is None:
        assert vm.disks == () and vm.cdroms == ()
    else:
        assert vm.disks == ()
        assert [(c.kind, c.file_name) for c in vm.cdroms] == [(kind, file_name)]
    assert bool(vm.notes) is noted


def test_cdrom_images(tmp_path: Path) -> None:
    (tmp_path / "here.iso").write_bytes(b"iso")
    isos = tmp_path.parent / f"{tmp_path.name}-isos"
    isos.mkdir()
    (isos / "far.iso").write_bytes(b"iso")
    lines = "".join(
        f'ide{c}:{u}.present = "TRUE"\nide{c}:{u}.deviceType = "cdrom-image"\n'
        f'ide{c}:{u}.fileName = "{name}"\n'
        for (c, u), name in (
            ((0, 0), "here.iso"),
            ((0, 1), f"../{isos.name}/far.iso"),
            ((1, 0), "gone.iso"),
            ((1, 1), "[isostore] x.iso"),
        )
    )
    vm = build(tmp_path, BASE + lines)
    assert [(c.kind, c.path, c.missing) for c in vm.cdroms] == [
        (MediaKind.IMAGE, str(tmp_path / "here.iso"), False),
        (MediaKind.IMAGE, str(isos / "far.iso"), False),  # never read, so allowed outside
        (MediaKind.IMAGE, str(tmp_path / "gone.iso"), True),
        (MediaKind.IMAGE, None, True),
    ]
    assert "ide1:1.fileName: image not usable" in note_text(vm) and "isostore" in note_text(vm)


def test_floppies(tmp_path: Path) -> None:
    (tmp_path / "drivers.flp").write_bytes(b"\0" * 512)
    vm = build(
        tmp_path,
        BASE + 'floppy0.fileType = "file"\nfloppy0.fileName = "drivers.flp"\n'
        'floppy1.present = "TRUE"\nfloppy1.fileType = "file"\nfloppy1.fileName = ""\n',
    )
    assert [(f.address.key, f.kind, f.path) for f in vm.floppies] == [
        ("floppy0", MediaKind.IMAGE, str(tmp_path / "drivers.flp")),
        ("floppy1", MediaKind.EMPTY, None),
    ]
    assert build(tmp_path, BASE).floppies == ()
    assert build(tmp_path, BASE + 'floppy0.present = "FALSE"\nfloppy0.fileName = "a.flp"\n').floppies == ()
    host = build(tmp_path, BASE + 'floppy0.startConnected = "FALSE"\n').floppies
    assert [(f.kind, f.file_name, f.start_connected) for f in host] == [(MediaKind.HOST, None, False)]
