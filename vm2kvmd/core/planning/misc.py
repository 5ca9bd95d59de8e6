"""Video, sound, USB and the graphical console."""

from __future__ import annotations

from dataclasses import dataclass

from vm2kvmd.core.hardware.model import Note, Sound, Usb, Video, Vnc
from vm2kvmd.core.planning.guestcaps import GuestCaps

_VIDEO_KEY = "svga"
# libvirt: "value for 'vram' must be at least 1 MiB (1024 KiB)" for vga/qxl;
# QEMU's VGA rounds vgamem up to a power of two and caps it; 256 MiB covers
# every svga.vramSize VMware writes.
_VRAM_MIN_KIB = 1024
_VRAM_MAX_KIB = 256 * 1024
_VRAM_DEFAULT_KIB = 16 * 1024  # libvirt's own default for vga/cirrus
_CIRRUS_VRAM_MAX_KIB = 16 * 1024  # the Cirrus chip addresses at most 16 MiB
_MULTIHEAD_MODELS = frozenset(
    {"qxl", "virtio"}
)  # libvirt: "video type 'vga' doesn't support multiple 'heads'"
_VRAM_MODELS = frozenset({"vga", "qxl", "cirrus"})  # virtio-vga sizes its memory itself


@dataclass(frozen=True)
class VideoPlan:
    model: str
    vram_kib: int | None
    heads: int


def _pow2_ceil(value: int) -> int:
    return 1 << (value - 1).bit_length()


def plan_video(video: Video | None, caps: GuestCaps, notes: list[Note]) -> VideoPlan:
    # A VM without SVGA is still given a display: a migrated VM needs a console.
    model = caps.video
    vram: int | None = None
    if model in _VRAM_MODELS:
        wanted = video.vram_kib if video and video.vram_kib else _VRAM_DEFAULT_KIB
        limit = _CIRRUS_VRAM_MAX_KIB if model == "cirrus" else _VRAM_MAX_KIB
        vram = min(max(_pow2_ceil(wanted), _VRAM_MIN_KIB), limit)
        if video and video.vram_kib and vram != video.vram_kib:
            notes.append(
                Note(f"video memory {video.vram_kib} KiB becomes {vram} KiB for {model}", _VIDEO_KEY)
            )
    heads = 1
    if video and video.num_displays > 1:
        if model in _MULTIHEAD_MODELS:
            heads = video.num_displays
        else:
            notes.append(
                Note(
                    f"{video.num_displays} displays: the {model} adapter drives only one; using one",
                    _VIDEO_KEY,
                )
            )
    if video and video.accel_3d:
        notes.append(Note("3D acceleration (mks.enable3d) is not mapped; 2D only", "mks.enable3d"))
    return VideoPlan(model=model, vram_kib=vram, heads=heads)


def plan_sound(sound: Sound | None, machine: str, notes: list[Note]) -> str | None:
    if sound is None:
        return None
    hda = "ich9" if machine == "q35" else "ich6"  # the HDA controller of the machine's own chipset
    if sound.model == "es1371":
        # QEMU has no ES1371; the ES1370 is its older sibling and the guide's choice.
        return "es1370"
    if sound.model == "hdaudio":
        return hda
    if sound.model == "sb16":
        # An ISA card; checked: QEMU 7.2 starts it on q35 (the ICH9 LPC has an ISA bus) and on pc.
        return "sb16"
    notes.append(Note(f"sound device {sound.model} is unknown; using Intel HDA ({hda})", "sound.virtualDev"))
    return hda


def plan_usb(usb: Usb) -> str | None:
    """The one USB controller model; the renderer adds EHCI's UHCI companions."""
    if usb.xhci:
        return "qemu-xhci"  # serves USB 1.1/2.0/3.x devices alike
    if usb.ehci:
        # A USB 2.0 EHCI alone cannot take full-speed devices such as the
        # tablet; libvirt's ich9-ehci1 + ich9-uhci1..3 set is VMware's UHCI+EHCI.
        return "ich9-ehci1"
    if usb.uhci:
        # A plain PCI UHCI; old guests (XP, 7) have no xHCI driver.  Checked on q35 too.
        return "piix3-uhci"
    return None


# VMware's RemoteDisplay.vnc.keyMap names -> QEMU 7.2 keymap names.
_KEYMAP_ALIASES = {
    "us": "en-us",
    "uk": "en-gb",
    "gb": "en-gb",
    "jp": "ja",
    "se": "sv",
    "dk": "da",
    "ch": "de-ch",
}
# /usr/share/qemu/keymaps of QEMU 7.2.
_QEMU_KEYMAP_NAMES = (
    "ar bepo cz da de de-ch en-gb en-us es et fi fo fr fr-be fr-ca fr-ch hr hu is it ja lt lv mk nl no pl "
    "pt pt-br ru sl sv th tr"
)
_QEMU_KEYMAPS = frozenset(_QEMU_KEYMAP_NAMES.split())
_VNC_PORT_MIN = 5900  # QEMU takes a display number, port - 5900


@dataclass(frozen=True)
class GraphicsPlan:
    kind: str
    port: int | None
    keymap: str | None


def plan_graphics(vnc: Vnc | None, notes: list[Note]) -> GraphicsPlan:
    # Always VNC: a migrated VM needs a console even when VMware's remote
    # display was off (the VMware console did that job).  It listens where
    # qemu.conf says (127.0.0.1 by default).
    if vnc is None or not vnc.enabled:
        return GraphicsPlan(kind="vnc", port=None, keymap=None)
    port = vnc.port
    if port is not None and port < _VNC_PORT_MIN:
        notes.append(
            Note(
                f"VNC port {port} is below 5900, which QEMU cannot use; port chosen automatically",
                "RemoteDisplay.vnc.port",
            )
        )
        port = None
    keymap: str | None = None
    if vnc.keymap:
        wanted = vnc.keymap.lower()
        keymap = _KEYMAP_ALIASES.get(wanted, wanted)
        if keymap not in _QEMU_KEYMAPS:
            notes.append(
                Note(f"VNC keymap {vnc.keymap} is unknown to QEMU; not set", "RemoteDisplay.vnc.keyMap")
            )
            keymap = None
    if vnc.has_password:
        notes.append(
            Note(
                "the VNC password is not copied; set one with virsh edit or in qemu.conf",
                "RemoteDisplay.vnc.password",
            )
        )
    return GraphicsPlan(kind="vnc", port=port, keymap=keymap)
