"""Non-storage devices of a VMX file: NICs, serial/parallel ports, display, sound, USB, VNC.

Values are validated here and normalised to the forms ``vm2kvmd.core.hardware.model``
documents; what is dropped or guessed becomes a ``Note`` so the user sees it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from vm2kvmd.core.hardware.limits import MAX_NICS, beyond_vmware
from vm2kvmd.core.hardware.model import (
    ZERO_MAC,
    CharPort,
    Nic,
    Note,
    PortEndpoint,
    PortKind,
    Sound,
    Usb,
    Video,
    Vnc,
)
from vm2kvmd.core.vmware.vmx import VmxFile, pci_slot

NIC_MODELS = frozenset({"vlance", "vmxnet", "vmxnet2", "vmxnet3", "e1000", "e1000e"})
CONNECTION_TYPES = frozenset({"bridged", "nat", "hostonly", "custom"})
ADDRESS_TYPES = frozenset({"generated", "vpx", "static"})
SOUND_MODELS = frozenset({"es1371", "hdaudio", "sb16"})
MAX_SERIALS = 4
MAX_PARALLELS = 3
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$")
_MAX_VRAM = 4 * 1024 * 1024 * 1024  # the most any VMware SVGA has had


def guest_default_nic(is_64bit: bool) -> str:
    """The NIC VMware emulates when ``ethernetN.virtualDev`` is absent.

    VMware's own default for the key is vlance (AMD PCnet32); 64-bit guests
    have no driver for it, so VMware gives them e1000 instead.
    """
    return "e1000" if is_64bit else "vlance"


def parse_mac(vmx: VmxFile, key: str, *, zero_ok: bool = False) -> str | None:
    """A unicast MAC in lower-case colon form; INVALID_VALUE naming ``key`` otherwise.

    ``zero_ok``: the all-zero MAC is kept (``ZERO_MAC``) instead of refused.  A static
    address may be all zero: NSX writes it for a NIC whose MAC it assigns at power-on.
    """
    raw = vmx.get_str(key)
    if raw is None or not raw.strip():
        return None
    text = raw.strip().lower()
    if not _MAC_RE.match(text):
        raise vmx.invalid(
            key, raw, "is not a MAC address", hint="expected six hex pairs like 00:50:56:ab:cd:ef"
        )
    mac = text.replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise vmx.invalid(key, raw, "is a multicast MAC address, which a NIC cannot use")
    if mac == ZERO_MAC and not zero_ok:
        raise vmx.invalid(key, raw, "is the all-zero MAC address")
    return mac


def read_nics(vmx: VmxFile, *, is_64bit: bool, notes: list[Note]) -> tuple[Nic, ...]:
    nics: list[Nic] = []
    for index in vmx.indices("ethernet"):
        prefix = f"ethernet{index}"
        if not vmx.get_bool(f"{prefix}.present", False):
            continue
        if index >= MAX_NICS:
            raise beyond_vmware(f"NIC {prefix}", vmx.key_name(f"{prefix}.present"), "10 NICs (ethernet0-9)")
        nics.append(_nic(vmx, index, prefix, is_64bit, notes))
    return tuple(nics)


def _nic(vmx: VmxFile, index: int, prefix: str, is_64bit: bool, notes: list[Note]) -> Nic:
    model_key = vmx.key_name(f"{prefix}.virtualDev")
    model = (vmx.get_str(model_key) or "").strip().lower()
    if not model:
        model = guest_default_nic(is_64bit)
        notes.append(Note(f"no virtualDev; VMware's default {model} assumed", model_key))
    elif model not in NIC_MODELS:
        fallback = guest_default_nic(is_64bit)
        notes.append(Note(f"unknown NIC model {model!r}; treated as {fallback}", model_key))
        model = fallback
    if model == "vmxnet" and vmx.get(f"{prefix}.features") == "15":
        # "Enhanced vmxnet" is written as vmxnet plus this feature mask.
        model = "vmxnet2"

    type_key = vmx.key_name(f"{prefix}.addressType")
    address_type = (vmx.get_str(type_key) or "generated").strip().lower()
    generated_key, static_key = f"{prefix}.generatedAddress", f"{prefix}.address"
    if address_type not in ADDRESS_TYPES:
        notes.append(Note(f"unknown addressType {address_type!r}; treated as generated", type_key))
        address_type = "generated"
    wanted, other = (static_key, generated_key) if address_type == "static" else (generated_key, static_key)
    mac = parse_mac(vmx, wanted, zero_ok=wanted == static_key)
    if mac is None:
        mac = parse_mac(vmx, other, zero_ok=other == static_key)
        if mac is not None:
            notes.append(Note(f"{address_type} address missing; {vmx.key_name(other)} used", type_key))
        else:
            notes.append(Note("no MAC address; the target will generate a new one", vmx.key_name(wanted)))

    conn_key = vmx.key_name(f"{prefix}.connectionType")
    connection = (vmx.get_str(conn_key) or "bridged").strip().lower()
    if connection not in CONNECTION_TYPES:
        notes.append(Note(f"unknown connectionType {connection!r}; treated as custom", conn_key))
        connection = "custom"
    network_name = _text(vmx, f"{prefix}.networkName")
    opaque_id = _text(vmx, f"{prefix}.opaqueNetwork.id")
    opaque_type = _text(vmx, f"{prefix}.opaqueNetwork.type")
    if opaque_id and not network_name:
        notes.append(
            Note(
                f"on NSX network {opaque_id} ({opaque_type or 'opaque'}); the VMX file does not carry its "
                f"name, so map it by its id: --network {opaque_id}=NAME",
                vmx.key_name(f"{prefix}.opaqueNetwork.id"),
            )
        )
    return Nic(
        index=index,
        model=model,
        mac=mac,
        address_type=address_type,
        connection_type=connection,
        network_name=network_name,
        vnet=_text(vmx, f"{prefix}.vnet"),
        dvs_port_group=_text(vmx, f"{prefix}.dvs.portgroupId"),
        dvs_switch=_text(vmx, f"{prefix}.dvs.switchId"),
        pci_slot=pci_slot(vmx, f"{prefix}.pciSlotNumber"),
        start_connected=vmx.get_bool(f"{prefix}.startConnected", True),
        opaque_network_id=opaque_id,
        opaque_network_type=opaque_type,
    )


def _text(vmx: VmxFile, key: str) -> str | None:
    value = (vmx.get_str(key) or "").strip()
    return value or None


# --- serial and parallel ports ------------------------------------------------------


def parse_port_uri(uri: str, *, server: bool) -> PortEndpoint | None:
    """``telnet://:1234``, ``tcp://10.0.0.1:4000`` ...; None when there is no usable port."""
    try:
        parts = urlsplit(uri.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc or port is None or port == 0:
        return None
    return PortEndpoint(protocol=parts.scheme.lower(), host=parts.hostname or None, port=port, server=server)


def read_ports(vmx: VmxFile, stem: str, limit: int, notes: list[Note]) -> tuple[CharPort, ...]:
    """``serialN`` or ``parallelN`` ports that are present."""
    ports: list[CharPort] = []
    for index in vmx.indices(stem):
        prefix = f"{stem}{index}"
        if not vmx.get_bool(f"{prefix}.present", False):
            continue
        if index >= limit:
            notes.append(Note(f"port outside VMware's range (0-{limit - 1}) ignored", f"{prefix}.present"))
            continue
        port = _port(vmx, index, prefix, notes)
        if port is not None:
            ports.append(port)
    return tuple(ports)


def _port(vmx: VmxFile, index: int, prefix: str, notes: list[Note]) -> CharPort | None:
    type_key = vmx.key_name(f"{prefix}.fileType")
    name_key = vmx.key_name(f"{prefix}.fileName")
    target = _text(vmx, name_key)
    raw_type = (vmx.get_str(type_key) or "").strip().lower()
    if not raw_type:
        # VMware's default backing is the host's physical port.
        raw_type = "device"
        notes.append(Note("no fileType; a host device assumed", type_key))
    try:
        kind = PortKind(raw_type)
    except ValueError:
        notes.append(Note(f"unknown fileType {raw_type!r}; port dropped", type_key))
        return None
    start = vmx.get_bool(f"{prefix}.startConnected", True)
    if kind is PortKind.PIPE:
        end = (vmx.get_str(f"{prefix}.pipe.endPoint") or "server").strip().lower()
        return CharPort(index, kind, target, pipe_server=end != "client", start_connected=start)
    if kind is PortKind.NETWORK:
        end = (vmx.get_str(f"{prefix}.network.endPoint") or "server").strip().lower()
        endpoint = parse_port_uri(target, server=end != "client") if target else None
        if endpoint is None:
            notes.append(
                Note(
                    f"network URI {target!r} has no usable protocol, host or port; port left unconnected",
                    name_key,
                )
            )
        return CharPort(index, kind, target, endpoint=endpoint, start_connected=start)
    return CharPort(index, kind, target, start_connected=start)


# --- display, sound, USB, VNC ---------------------------------------------------------


def read_video(vmx: VmxFile) -> Video | None:
    if not vmx.get_bool("svga.present", True):
        return None
    vram = vmx.get_int("svga.vramSize", None, minimum=0, maximum=_MAX_VRAM)
    displays = vmx.get_int("svga.numDisplays", 1, minimum=0, maximum=10) or 1
    return Video(
        vram_kib=vram // 1024 if vram else None,
        num_displays=displays,
        autodetect=vmx.get_bool("svga.autodetect", True),
        accel_3d=vmx.get_bool("mks.enable3d", False),
    )


def read_sound(vmx: VmxFile, notes: list[Note]) -> Sound | None:
    if not vmx.get_bool("sound.present", False):
        return None
    key = vmx.key_name("sound.virtualDev")
    model = (vmx.get_str(key) or "").strip().lower()
    if not model:
        model = "es1371"
        notes.append(Note("no virtualDev; es1371 (Sound Blaster PCI) assumed", key))
    elif model not in SOUND_MODELS:
        notes.append(Note(f"unknown sound model {model!r} kept as written", key))
    return Sound(model=model, auto_detect=vmx.get_bool("sound.autodetect", True))


def read_usb(vmx: VmxFile) -> Usb:
    return Usb(
        uhci=vmx.get_bool("usb.present", False),
        ehci=vmx.get_bool("ehci.present", False),
        xhci=vmx.get_bool("usb_xhci.present", False),
    )


def read_vnc(vmx: VmxFile) -> Vnc | None:
    """VMware's built-in VNC server; the password is never kept, only whether there is one."""
    if not vmx.get_bool("RemoteDisplay.vnc.enabled", False):
        return None
    return Vnc(
        enabled=True,
        port=vmx.get_int("RemoteDisplay.vnc.port", None, minimum=0, maximum=65535),
        keymap=_text(vmx, "RemoteDisplay.vnc.keyMap"),
        has_password=bool(vmx.get("RemoteDisplay.vnc.password") or vmx.get("RemoteDisplay.vnc.key")),
    )


# --- what we drop ------------------------------------------------------------------


def dropped_notes(vmx: VmxFile) -> Iterable[Note]:
    """Notes for VMX content that has no place in the target."""
    wildcard = sorted(vmx.key_name(k) for k in vmx.entries if "*" in k)
    if wildcard:
        yield Note("keys with wildcards ignored: " + ", ".join(wildcard))
    for index in vmx.indices("pciPassthru"):
        key = f"pciPassthru{index}.present"
        if vmx.get_bool(key, False):
            yield Note(
                "PCI passthrough device dropped: host hardware cannot follow the VM", vmx.key_name(key)
            )
    if not vmx.get_bool("isolation.tools.hgfs.disable", False):
        for index in vmx.indices("sharedFolder"):
            key = f"sharedFolder{index}.present"
            if vmx.get_bool(key, False) and vmx.get_bool(f"sharedFolder{index}.enabled", True):
                host = vmx.get_str(f"sharedFolder{index}.hostPath") or "?"
                yield Note(f"shared folder {host!r} dropped (VMware Tools feature)", vmx.key_name(key))
    state = vmx.get_str("checkpoint.vmState")
    if state and state.strip():
        yield Note(
            f"the VM is suspended ({state.strip()!r}); its memory state is lost and it cold boots",
            vmx.key_name("checkpoint.vmState"),
        )
