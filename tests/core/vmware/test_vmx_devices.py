"""SourceVM devices from VMX: NICs, serial/parallel ports, display, sound, USB, VNC, dropped things."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.vmware.vmx_support import BASE, build, note_text
from vm2kvmd.core.hardware.model import ZERO_MAC, PortEndpoint, PortKind, SourceVM
from vm2kvmd.core.vmware.vmx_devices import parse_port_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def nic_vm(tmp_path: Path, lines: str, guest: str = "other") -> SourceVM:
    return build(
        tmp_path, BASE.replace('"other"', f'"{guest}"') + 'ethernet0.present = "TRUE"\n' + lines + "\n"
    )


@pytest.mark.parametrize(
    ("guest", "model"), [("winxppro", "vlance"), ("windows9-64", "e1000"), ("rhel4", "vlance")]
)
def test_nic_default_model(tmp_path: Path, guest: str, model: str) -> None:
    vm = nic_vm(tmp_path, "", guest)
    assert vm.nics[0].model == model
    assert f"ethernet0.virtualDev: no virtualDev; VMware's default {model} assumed" in note_text(vm)


def test_nic_models(tmp_path: Path) -> None:
    assert (
        nic_vm(tmp_path, 'ethernet0.virtualDev = "vmxnet"\nethernet0.features = "15"').nics[0].model
        == "vmxnet2"
    )
    assert nic_vm(tmp_path, 'ethernet0.virtualDev = "VMXNET3"').nics[0].model == "vmxnet3"
    odd = nic_vm(tmp_path, 'ethernet0.virtualDev = "vrdma"', "ubuntu-64")
    assert odd.nics[0].model == "e1000" and "unknown NIC model 'vrdma'" in note_text(odd)


def test_nic_addresses(tmp_path: Path) -> None:
    vm = nic_vm(tmp_path, 'ethernet0.addressType = "static"\nethernet0.address = "00-50-56-3F-AB-CD"')
    assert (vm.nics[0].mac, vm.nics[0].address_type) == ("00:50:56:3f:ab:cd", "static")
    fallback = nic_vm(
        tmp_path, 'ethernet0.addressType = "static"\nethernet0.generatedAddress = "00:0c:29:01:02:03"'
    )
    assert fallback.nics[0].mac == "00:0c:29:01:02:03"
    assert "static address missing; ethernet0.generatedAddress used" in note_text(fallback)
    none = nic_vm(tmp_path, "")
    assert none.nics[0].mac is None and "no MAC address" in note_text(none)


def test_nsx_all_zero_static_mac_is_kept_for_planning(tmp_path: Path) -> None:
    # NSX writes a static all-zero MAC and assigns the real one at power-on (issue 12).
    vm = nic_vm(tmp_path, 'ethernet0.addressType = "static"\nethernet0.address = "00:00:00:00:00:00"')
    assert (vm.nics[0].mac, vm.nics[0].address_type) == (ZERO_MAC, "static")
    # A generated address is VMware's own and never zero: still a named error (test_vmx_hardware).


def test_nsx_opaque_network_is_named_by_its_id(tmp_path: Path) -> None:
    # An N-VDS segment: ESXi writes its id and type, no networkName (tests/data/vmx/esxi-nsx-ubuntu).
    seg = "5d9f1a9c-0b6e-4c1d-9a43-7e2f61d5b0a8"
    vm = nic_vm(
        tmp_path, f'ethernet0.opaqueNetwork.id = "{seg}"\nethernet0.opaqueNetwork.type = "nsx.LogicalSwitch"'
    )
    (nic,) = vm.nics
    assert (nic.source_network, nic.opaque_network_id, nic.opaque_network_type) == (
        seg,
        seg,
        "nsx.LogicalSwitch",
    )
    assert (
        f"ethernet0.opaqueNetwork.id: on NSX network {seg} (nsx.LogicalSwitch); the VMX file does not "
        f"carry its name, so map it by its id: --network {seg}=NAME"
    ) in note_text(vm)
    named = nic_vm(tmp_path, f'ethernet0.opaqueNetwork.id = "{seg}"\nethernet0.networkName = "seg-web"')
    assert named.nics[0].source_network == "seg-web" and "NSX" not in note_text(named)


def test_nic_connections(tmp_path: Path) -> None:
    custom = nic_vm(tmp_path, 'ethernet0.connectionType = "custom"\nethernet0.vnet = "/dev/vmnet8"')
    assert (custom.nics[0].connection_type, custom.nics[0].vnet, custom.nics[0].source_network) == (
        "custom",
        "/dev/vmnet8",
        "vmnet8",
    )
    lan = nic_vm(tmp_path, 'ethernet0.connectionType = "pvn"')
    assert lan.nics[0].connection_type == "custom" and "unknown connectionType 'pvn'" in note_text(lan)
    vm = build(
        tmp_path,
        BASE + 'ethernet0.present = "FALSE"\nethernet2.present = "TRUE"\nethernet2.startConnected = "FALSE"\n'
        'ethernet10.present = "FALSE"\n',
    )
    assert [(n.index, n.start_connected) for n in vm.nics] == [(2, False)]


# --- ports ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("telnet://:1234", PortEndpoint("telnet", None, 1234, True)),
        ("tcp://10.0.0.1:4000", PortEndpoint("tcp", "10.0.0.1", 4000, True)),
        ("telnet://0.0.0.0:2000", PortEndpoint("telnet", "0.0.0.0", 2000, True)),
        ("TCP6://[fd00::7]:7000", PortEndpoint("tcp6", "fd00::7", 7000, True)),
        (
            "telnets://vspc.example.com:13370#thumbprint=AB:CD",
            PortEndpoint("telnets", "vspc.example.com", 13370, True),
        ),
        ("telnet://vspc.example.com", None),
        ("telnet://host:0", None),
        ("telnet://host:99999", None),
        ("telnet://host:port", None),
        ("telnet:1234", None),
        ("not a uri", None),
    ],
)
def test_port_uris(uri: str, expected: PortEndpoint | None) -> None:
    assert parse_port_uri(uri, server=True) == expected


def test_serial_and_parallel_ports(tmp_path: Path) -> None:
    vm = build(
        tmp_path,
        BASE
        + 'serial0.present = "TRUE"\nserial0.fileType = "network"\nserial0.fileName = "tcp://10.1.1.1:4000"\n'
        'serial0.network.endPoint = "client"\n'
        'serial1.present = "TRUE"\nserial1.fileType = "pipe"\nserial1.fileName = "/tmp/com2"\n'
        'serial1.pipe.endPoint = "client"\nserial1.startConnected = "FALSE"\n'
        'serial2.present = "TRUE"\nserial2.fileName = "/dev/ttyS0"\n'
        'serial3.present = "TRUE"\nserial3.fileType = "carrier-pigeon"\n'
        'serial4.present = "TRUE"\nserial4.fileType = "file"\n'
        'parallel0.present = "TRUE"\nparallel0.fileType = "device"\nparallel0.fileName = "/dev/parport0"\n',
    )
    net, pipe, device = vm.serials
    assert net.endpoint == PortEndpoint("tcp", "10.1.1.1", 4000, False)
    assert (pipe.kind, pipe.target, pipe.pipe_server, pipe.start_connected) == (
        PortKind.PIPE,
        "/tmp/com2",
        False,
        False,
    )
    assert (device.kind, device.target) == (PortKind.DEVICE, "/dev/ttyS0")
    assert [(p.kind, p.target) for p in vm.parallels] == [(PortKind.DEVICE, "/dev/parport0")]
    notes = note_text(vm)
    assert "serial2.fileType: no fileType" in notes
    assert "serial3.fileType: unknown fileType 'carrier-pigeon'; port dropped" in notes
    assert "port outside VMware's range (0-3)" in notes


# --- display, sound, USB, VNC, dropped things ---------------------------------------------


def test_display_sound_usb_vnc(tmp_path: Path) -> None:
    vm = build(
        tmp_path,
        BASE + 'svga.vramSize = "134217728"\nsvga.numDisplays = "0"\nmks.enable3d = "TRUE"\n'
        'sound.present = "TRUE"\nsound.virtualDev = "sb16"\nsound.autodetect = "FALSE"\n'
        'usb_xhci.present = "TRUE"\n'
        'RemoteDisplay.vnc.enabled = "TRUE"\nRemoteDisplay.vnc.key = "ZW5jcnlwdGVk"\n',
    )
    assert vm.video is not None and (vm.video.vram_kib, vm.video.num_displays, vm.video.accel_3d) == (
        131072,
        1,
        True,
    )
    assert vm.sound is not None and (vm.sound.model, vm.sound.auto_detect) == ("sb16", False)
    assert (vm.usb.uhci, vm.usb.ehci, vm.usb.xhci, vm.usb.present) == (False, False, True, True)
    assert vm.vnc is not None and (vm.vnc.port, vm.vnc.keymap, vm.vnc.has_password) == (None, None, True)
    bare = build(tmp_path, BASE + 'svga.present = "FALSE"\nRemoteDisplay.vnc.enabled = "FALSE"\n')
    assert (bare.video, bare.sound, bare.vnc, bare.usb.present) == (None, None, None, False)


def test_dropped_things_are_noted(tmp_path: Path) -> None:
    vm = build(
        tmp_path,
        BASE + 'pciPassthru0.present = "TRUE"\npciPassthru1.present = "FALSE"\n'
        'sharedFolder0.present = "TRUE"\nsharedFolder0.hostPath = "/srv/share"\n'
        'checkpoint.vmState = "vm-Snapshot1.vmss"\n',
    )
    notes = note_text(vm)
    assert "pciPassthru0.present: PCI passthrough" in notes and "pciPassthru1" not in notes
    assert "shared folder '/srv/share' dropped" in notes
    assert "checkpoint.vmState: the VM is suspended" in notes
    hgfs_off = build(
        tmp_path, BASE + 'isolation.tools.hgfs.disable = "TRUE"\nsharedFolder0.present = "TRUE"\n'
    )
    assert "shared folder" not in note_text(hgfs_off)


def test_an_eleventh_nic_is_refused_naming_its_key(tmp_path: Path) -> None:
    nics = "".join(f'ethernet{i}.present = "TRUE"\nethernet{i}.virtualDev = "e1000"\n' for i in range(11))
    with pytest.raises(Vm2kvmError) as exc:
        build(tmp_path, BASE + nics)
    assert exc.value.code is ErrorCode.HARDWARE_LIMIT
    assert exc.value.key == "ethernet10.present"
    assert "a VMware VM has at most 10 NICs (ethernet0-9)" in str(exc.value)
    ten = build(tmp_path, BASE + nics.split("ethernet10")[0])
    assert len(ten.nics) == 10
