"""USB, input, graphics, sound, video, balloon and RNG."""

from __future__ import annotations

from lxml import etree

from vm2kvmd.core.domainxml._xml import sub
from vm2kvmd.core.planning.plan import DomainPlan

# EHCI takes only high-speed devices; libvirt's documented companion set puts
# three UHCI controllers behind it for full/low-speed ones (tablet, keyboards).
_EHCI_COMPANIONS = (("ich9-uhci1", 0), ("ich9-uhci2", 2), ("ich9-uhci3", 4))


def render_usb_controllers(devices: etree._Element, plan: DomainPlan) -> None:
    if plan.usb_model is None:
        # Without this libvirt adds a default USB controller the source never had.
        sub(devices, "controller", type="usb", model="none")
        return
    sub(devices, "controller", type="usb", index=0, model=plan.usb_model)
    if plan.usb_model == "ich9-ehci1":
        for model, startport in _EHCI_COMPANIONS:
            companion = sub(devices, "controller", type="usb", index=0, model=model)
            sub(companion, "master", startport=startport)


def render_input_and_graphics(devices: etree._Element, plan: DomainPlan) -> None:
    if plan.tablet:
        # Absolute pointer: the VNC mouse follows the cursor without grabbing.
        sub(devices, "input", type="tablet", bus="usb")
    if plan.graphics:
        if plan.vnc_port is not None:
            sub(
                devices,
                "graphics",
                type=plan.graphics,
                port=plan.vnc_port,
                autoport="no",
                keymap=plan.vnc_keymap,
            )
        else:
            sub(devices, "graphics", type=plan.graphics, port=-1, autoport="yes", keymap=plan.vnc_keymap)


def render_sound_and_video(devices: etree._Element, plan: DomainPlan) -> None:
    if plan.sound_model:
        sub(devices, "sound", model=plan.sound_model)
    if plan.video_model:
        video = sub(devices, "video")
        sub(
            video,
            "model",
            type=plan.video_model,
            vram=plan.video_vram_kib,
            heads=plan.video_heads,
            primary="yes",
        )


def render_balloon_and_rng(devices: etree._Element, plan: DomainPlan) -> None:
    # model='none' is explicit: libvirt otherwise adds a virtio balloon.
    sub(devices, "memballoon", model="virtio" if plan.balloon else "none")
    if plan.rng:
        rng = sub(devices, "rng", model="virtio")
        sub(rng, "backend", "/dev/urandom", model="random")
