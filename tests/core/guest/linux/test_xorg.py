"""xorg.conf and modprobe.conf without VMware-only drivers."""

from __future__ import annotations

from vm2kvmd.core.guest.linux.xorg import fix_modprobe_conf, fix_xorg_conf

# What system-config-display wrote on RHEL 5/6 VMware guests (tabs and all).
RHEL_XORG = """\
# Xorg configuration created by system-config-display

Section "ServerLayout"
	Identifier     "single head configuration"
	Screen      0  "Screen0" 0 0
	InputDevice    "Keyboard0" "CoreKeyboard"
	InputDevice    "VMMouse" "CorePointer"
EndSection

Section "InputDevice"
	Identifier  "Keyboard0"
	Driver      "kbd"
	Option	    "XkbModel" "pc105"
	Option	    "XkbLayout" "us"
EndSection

Section "InputDevice"
	Identifier  "VMMouse"
	Driver      "vmmouse"
	Option	    "Device" "/dev/input/mice"
	Option	    "Emulate3Buttons" "yes"
EndSection

Section "Device"
	Identifier  "Videocard0"
	Driver      "vmware"
	BusID       "PCI:0:15:0"
EndSection

Section "Screen"
	Identifier "Screen0"
	Device     "Videocard0"
	DefaultDepth     24
	SubSection "Display"
		Viewport   0 0
		Depth     24
	EndSubSection
EndSection
"""


def test_rhel_xorg_conf() -> None:
    edit = fix_xorg_conf(RHEL_XORG)
    assert edit.summaries == (
        'removed InputDevice "VMMouse" (vmmouse)',
        'Device "Videocard0": driver vmware -> modesetting',
    )
    text = edit.text
    assert 'Driver      "modesetting"' in text
    assert '"vmware"' not in text and '"vmmouse"' not in text
    assert '# vm2kvm: BusID       "PCI:0:15:0"' in text
    assert '# vm2kvm: InputDevice    "VMMouse" "CorePointer"' in text
    assert '\tInputDevice    "Keyboard0" "CoreKeyboard"' in text  # the keyboard stays
    assert 'Driver      "kbd"' in text
    assert "Emulate3Buttons" not in text
    assert '\tSubSection "Display"\n\t\tViewport   0 0\n' in text  # subsections untouched
    assert text.count("EndSection") == 4


def test_xorg_conf_d_snippet_and_case() -> None:
    snippet = (
        'Section "InputClass"\n    Identifier "vmmouse"\n    MatchIsPointer "on"\n    MatchTag "vmmouse"\n'
        '    Driver "vmmouse"\nEndSection\n'
        'section "device"\n    identifier "svga"\n    driver "VMware"\nendsection\n'
    )
    edit = fix_xorg_conf(snippet)
    assert edit.text == (
        "# vm2kvm: removed inputclass section 'vmmouse' (vmmouse driver; X autodetects the pointer)\n"
        'section "device"\n    identifier "svga"\n    driver "modesetting"\nendsection\n'
    )


def test_xorg_conf_without_vmware_is_unchanged() -> None:
    text = 'Section "Device"\n\tIdentifier "Card0"\n\tDriver "intel"\nEndSection\n'
    edit = fix_xorg_conf(text)
    assert not edit.changed and edit.text == text


# RHEL 5 /etc/modprobe.conf as anaconda wrote it on VMware, plus what VMware Tools added.
RHEL5_MODPROBE = """\
alias eth0 pcnet32
alias eth1 vmxnet3
alias scsi_hostadapter mptbase
alias scsi_hostadapter1 mptspi
alias scsi_hostadapter2 ata_piix
alias snd-card-0 snd-ens1371
options snd-card-0 index=0
options vmw_balloon balloon_timeout=300
install vmhgfs /sbin/modprobe --ignore-install vmhgfs || /bin/true
alias pci:v000015ADd000007B0sv*sd*bc*sc*i* vmxnet3
# options vmw_pvscsi cmd_per_lun=254
blacklist vmw_pvscsi
"""


def test_rhel5_modprobe_conf_to_virtio() -> None:
    edit = fix_modprobe_conf(RHEL5_MODPROBE, "virtio_blk", "virtio_net")
    assert edit.text == (
        "# vm2kvm: alias eth0 pcnet32\nalias eth0 virtio_net\n"
        "# vm2kvm: alias eth1 vmxnet3\nalias eth1 virtio_net\n"
        "# vm2kvm: alias scsi_hostadapter mptbase\nalias scsi_hostadapter virtio_blk\n"
        "# vm2kvm: alias scsi_hostadapter1 mptspi\n"
        "alias scsi_hostadapter2 ata_piix\n"
        "alias snd-card-0 snd-ens1371\n"
        "options snd-card-0 index=0\n"
        "# vm2kvm: options vmw_balloon balloon_timeout=300\n"
        "# vm2kvm: install vmhgfs /sbin/modprobe --ignore-install vmhgfs || /bin/true\n"
        "# vm2kvm: alias pci:v000015ADd000007B0sv*sd*bc*sc*i* vmxnet3\n"
        "# options vmw_pvscsi cmd_per_lun=254\n"
        "blacklist vmw_pvscsi\n"
    )
    assert edit.summaries[:3] == (
        "alias eth0 pcnet32 -> virtio_net",
        "alias eth1 vmxnet3 -> virtio_net",
        "alias scsi_hostadapter mptbase -> virtio_blk",
    )


def test_modprobe_e1000_kept_when_the_nic_stays_e1000() -> None:
    edit = fix_modprobe_conf("alias eth0 e1000\n", "ahci", "e1000")
    assert not edit.changed


def test_vmware_tools_modprobe_d_file() -> None:
    text = "# Added by VMware Tools\noptions vmw_pvscsi cmd_per_lun=254 ring_pages=32\n"
    edit = fix_modprobe_conf(text, "virtio_blk", "virtio_net")
    assert edit.text == (
        "# Added by VMware Tools\n# vm2kvm: options vmw_pvscsi cmd_per_lun=254 ring_pages=32\n"
    )
    assert edit.summaries == ("commented out 'options vmw_pvscsi cmd_per_lun=254 ring_pages=32'",)
