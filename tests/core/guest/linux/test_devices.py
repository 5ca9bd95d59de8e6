"""Disk names before/after migration and the edits of fstab, crypttab and bootloader configs (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.vmware.vmx_support import BASE, build, good_disk
from vm2kvmd.core.guest.info import DeviceMap, DiskName, Filesystem
from vm2kvmd.core.guest.linux.devices import (
    DISABLE_UUID_NOTE,
    DeviceResolver,
    Replacer,
    choose_spec,
    describe,
    device_map,
    disk_letters,
    is_disk_name,
    rewrite_bls_entry,
    rewrite_cmdline,
    rewrite_crypttab,
    rewrite_default_grub,
    rewrite_device_map,
    rewrite_fstab,
    rewrite_grub_cfg,
    rewrite_grubenv,
    rewrite_initramfs_resume,
    rewrite_menu_lst,
    rewrite_sysconfig_bootloader,
)
from vm2kvmd.core.hardware.model import SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions

UUID_ROOT = "0b1c4a5e-7d2f-4e60-9a51-3f1c2d9e8a70"
UUID_BOOT = "5d6e7f80-1a2b-4c3d-8e9f-a0b1c2d3e4f5"
UUID_SWAP = "c3a1e0d2-55b4-4f8e-9c1d-7a6b5c4d3e2f"
UUID_HOME = "9f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19"


def _vm(tmp_path: Path, disks: str) -> SourceVM:
    return build(tmp_path, BASE + disks, good_disk())


def _plan(vm: SourceVM, disk_bus: str = "virtio") -> DomainPlan:
    opts = PlanOptions(target_dir="/var/lib/libvirt/images", new_uuid="11111111-2222-3333-4444-555555555555")
    return plan_domain(vm, opts, GuestCaps(disk_bus=disk_bus))


def _disk(key: str, name: str) -> str:
    ctrl = key.split(":")[0]
    return f'{ctrl}.present = "TRUE"\n{key}.present = "TRUE"\n{key}.fileName = "{name}.vmdk"\n'


# --- device_map ----------------------------------------------------------------------


def test_letters_follow_the_kernel() -> None:
    assert [disk_letters(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa",
    ]  # fmt: skip


def test_scsi_then_sata_then_ide(tmp_path: Path) -> None:
    vm = _vm(
        tmp_path,
        _disk("sata0:0", "sata")
        + _disk("scsi1:0", "scsi10")
        + _disk("scsi0:1", "scsi01")
        + _disk("scsi0:0", "scsi00")
        + _disk("ide1:0", "ide10")
        + _disk("nvme0:0", "nvme00")
        + _disk("nvme0:1", "nvme01"),
    )
    plan = _plan(vm)
    names = {p.source.address.key: d for p, d in zip(plan.disks, device_map(vm, plan).disks, strict=True)}
    assert names["scsi0:0"].source_names == ("sda", "xvda")
    assert names["scsi0:1"].source_names == ("sdb", "xvdb")
    assert names["scsi1:0"].source_names == ("sdc", "xvdc")
    assert names["sata0:0"].source_names == ("sdd", "xvdd")
    assert names["ide1:0"].source_names == ("hdc", "sde", "xvde")
    assert names["nvme0:0"].source_names == ("nvme0n1",)
    assert names["nvme0:1"].source_names == ("nvme0n2",)
    dm = device_map(vm, plan)
    assert [d.appliance for d in dm.disks] == ["sda", "sdb", "sdc", "sdd", "sde", "sdf", "sdg"]
    assert [d.target for d in dm.disks] == [p.target_dev for p in plan.disks]
    assert [d.index for d in dm.disks] == list(range(7))


def test_ide_positions(tmp_path: Path) -> None:
    vm = _vm(tmp_path, _disk("ide0:0", "a") + _disk("ide0:1", "b") + _disk("ide1:1", "d"))
    plan = _plan(vm, "sata")
    by_key = {p.source.address.key: d for p, d in zip(plan.disks, device_map(vm, plan).disks, strict=True)}
    assert by_key["ide0:0"].source_names[:2] == ("hda", "sda")
    assert by_key["ide0:1"].source_names[:2] == ("hdb", "sdb")
    assert by_key["ide1:1"].source_names[:2] == ("hdd", "sdc")
    assert by_key["ide0:0"].target == "sda"


# --- the resolver --------------------------------------------------------------------

# Two disks, the second is the first in the plan's order: appliance names follow the plan.
MAP = DeviceMap(
    (
        DiskName(0, ("sda", "xvda"), "sda", "vda"),
        DiskName(1, ("hdb", "sdb", "xvdb"), "sdb", "vdb"),
        DiskName(2, ("nvme0n1",), "sdc", "vdc"),
    )
)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("/dev/sda1", ("/dev/sda1", "/dev/vda1")),
        ("/dev/sda", ("/dev/sda", "/dev/vda")),
        ("/dev/sda10", ("/dev/sda10", "/dev/vda10")),
        ("/dev/xvda2", ("/dev/sda2", "/dev/vda2")),
        ("/dev/hdb2", ("/dev/sdb2", "/dev/vdb2")),
        ("/dev/sdb5", ("/dev/sdb5", "/dev/vdb5")),
        ("/dev/nvme0n1p3", ("/dev/sdc3", "/dev/vdc3")),
        ("/dev/nvme0n1", ("/dev/sdc", "/dev/vdc")),
        ("/dev/sdd1", None),  # not in the map
        ("/dev/sdaa1", None),
        ("UUID=" + UUID_ROOT, None),
        ("LABEL=root", None),
        ("/dev/mapper/rhel-root", None),
        ("/dev/vg0/root", None),
        ("/dev/disk/by-uuid/" + UUID_ROOT, None),
        ("/dev/disk/by-label/root", None),
        ("/dev/sr0", None),
        ("/dev/fd0", None),
        ("/dev/vda1", None),
        ("tmpfs", None),
    ],
)
def test_resolve(reference: str, expected: tuple[str, str] | None) -> None:
    got = DeviceResolver.for_guest(MAP).resolve(reference)
    assert (got and (got.appliance, got.target)) == expected


def test_target_names_ending_in_a_digit_get_p() -> None:
    resolver = DeviceResolver.for_guest(DeviceMap((DiskName(0, ("sda",), "sda", "nvme0n1"),)))
    got = resolver.resolve("/dev/sda2")
    assert got is not None and got.target == "/dev/nvme0n1p2"


def test_appliance_resolver_uses_appliance_names() -> None:
    dm = DeviceMap((DiskName(0, ("sdb",), "sda", "vda"), DiskName(1, ("sda",), "sdb", "vdb")))
    got = DeviceResolver.for_appliance(dm).resolve("/dev/sda1")
    assert got is not None and (got.appliance, got.target) == ("/dev/sda1", "/dev/vda1")
    got = DeviceResolver.for_guest(dm).resolve("/dev/sda1")
    assert got is not None and (got.appliance, got.target) == ("/dev/sdb1", "/dev/vdb1")


def test_by_path_with_one_scsi_controller(tmp_path: Path) -> None:
    vm = _vm(tmp_path, _disk("scsi0:0", "a") + _disk("scsi0:1", "b"))
    plan = _plan(vm)
    resolver = DeviceResolver.for_guest(device_map(vm, plan), plan)
    got = resolver.resolve("/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:1:0-part2")
    assert got is not None and (got.appliance, got.target) == ("/dev/sdb2", "/dev/vdb2")
    assert resolver.resolve("/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:5:0") is None


def test_by_path_is_not_guessed_with_two_controllers(tmp_path: Path) -> None:
    vm = _vm(tmp_path, _disk("scsi0:0", "a") + _disk("scsi1:0", "b"))
    plan = _plan(vm)
    resolver = DeviceResolver.for_guest(device_map(vm, plan), plan)
    assert resolver.resolve("/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part1") is None
    assert is_disk_name("/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part1")


# --- the replacement policy ---------------------------------------------------------


def test_choose_spec() -> None:
    root = Filesystem("/dev/sda1", "ext4", UUID_ROOT, "root")
    assert choose_spec("/dev/vda1", root) == f"UUID={UUID_ROOT}"
    assert choose_spec("/dev/vda5", Filesystem("/dev/sda5", "swap", UUID_SWAP)) == f"UUID={UUID_SWAP}"
    assert choose_spec("/dev/vda1", Filesystem("/dev/sda1", "vfat", None, "ESP")) == "LABEL=ESP"
    assert choose_spec("/dev/vda1", Filesystem("/dev/sda1", "ext4", None, "my data")) == "/dev/vda1"
    assert choose_spec("/dev/vda1", None) == "/dev/vda1"
    # A cloned disk attached next to its original: the UUID (and label) name either of them.
    clone = Filesystem("/dev/sdb1", "ext4", UUID_ROOT, "root")
    assert choose_spec("/dev/vda1", root, [root, clone]) == "/dev/vda1"
    assert choose_spec("/dev/vda1", root, [root, Filesystem("/dev/sdb1", "ext4", UUID_HOME, "root")]) == (
        f"UUID={UUID_ROOT}"
    )


FACTS = {
    "/dev/sda1": Filesystem("/dev/sda1", "ext4", UUID_ROOT),
    "/dev/sda2": Filesystem("/dev/sda2", "ext2", UUID_BOOT),
    "/dev/sda5": Filesystem("/dev/sda5", "swap", UUID_SWAP),
    "/dev/sda10": Filesystem("/dev/sda10", "ext4", UUID_HOME),
    "/dev/sdb1": Filesystem("/dev/sdb1", "xfs", None, "data"),
}


def _replacer(device_map: DeviceMap = MAP) -> Replacer:
    return Replacer(DeviceResolver.for_guest(device_map), FACTS.get, tuple(FACTS.values()))


# --- fstab / crypttab -----------------------------------------------------------------

DEBIAN_FSTAB = """\
# /etc/fstab: static file system information.
#
# Use 'blkid' to print the universally unique identifier for a
# device; this may be used with UUID= as a more robust way to name devices
# that works even if disks are added and removed. See fstab(5).
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/sda1       /               ext4    errors=remount-ro 0       1
# /home was on /dev/sda10 during installation
/dev/sda10\t/home\text4\tdefaults,noatime\t0\t2
/dev/sda5       none            swap    sw              0       0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
UUID=5d6e7f80-1a2b-4c3d-8e9f-a0b1c2d3e4f5 /boot ext2 defaults 0 2
  /dev/hdb1  /data  xfs  defaults,nofail  0  2
/dev/sdd1 /mnt/usb vfat noauto 0 0
tmpfs /tmp tmpfs defaults 0 0
"""


def test_fstab_debian() -> None:
    replace = _replacer()
    new, pairs = rewrite_fstab(DEBIAN_FSTAB, replace)
    assert new == DEBIAN_FSTAB.replace(
        "/dev/sda1       /", f"UUID={UUID_ROOT}       /"
    ).replace(
        "/dev/sda10\t/home", f"UUID={UUID_HOME}\t/home"
    ).replace(
        "/dev/sda5       none", f"UUID={UUID_SWAP}       none"
    ).replace("  /dev/hdb1  /data", "  LABEL=data  /data")  # fmt: skip
    assert pairs == [
        ("/dev/sda1", f"UUID={UUID_ROOT}"),
        ("/dev/sda10", f"UUID={UUID_HOME}"),
        ("/dev/sda5", f"UUID={UUID_SWAP}"),
        ("/dev/hdb1", "LABEL=data"),
    ]
    assert "# /home was on /dev/sda10 during installation" in new  # comments are kept as they are
    assert replace.unmapped == ["/dev/sdd1"]
    # Idempotent: the second run finds nothing left to change.
    assert rewrite_fstab(new, _replacer()) == (new, [])


def test_fstab_without_file_system_facts_uses_new_names() -> None:
    replace = Replacer(DeviceResolver.for_guest(MAP), lambda _dev: None)
    new, pairs = rewrite_fstab("/dev/sda1 / ext4 defaults 0 1\n/dev/nvme0n1p2 /srv xfs defaults 0 0", replace)
    assert new == "/dev/vda1 / ext4 defaults 0 1\n/dev/vdc2 /srv xfs defaults 0 0"
    assert pairs == [("/dev/sda1", "/dev/vda1"), ("/dev/nvme0n1p2", "/dev/vdc2")]
    # Idempotent too: vdX is not a VMware name.
    assert rewrite_fstab(new, Replacer(DeviceResolver.for_guest(MAP), lambda _dev: None)) == (new, [])


CRYPTTAB = """\
# <target name>\t<source device>\t\t<key file>\t<options>
sda2_crypt\t/dev/sda2\tnone\tluks,discard
cryptswap /dev/sda5 /dev/urandom swap,cipher=aes-xts-plain64,size=256
home_crypt UUID=9f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19 none luks
"""


def test_crypttab() -> None:
    new, pairs = rewrite_crypttab(CRYPTTAB, _replacer())
    assert pairs == [("/dev/sda2", f"UUID={UUID_BOOT}"), ("/dev/sda5", f"UUID={UUID_SWAP}")]
    assert f"sda2_crypt\tUUID={UUID_BOOT}\tnone\tluks,discard\n" in new
    assert "/dev/urandom" in new  # the key file field is not a device to rewrite
    assert rewrite_crypttab(new, _replacer()) == (new, [])


# --- kernel command lines -------------------------------------------------------------


def test_cmdline_whole_arguments_only() -> None:
    line = (
        "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro nfsroot=/dev/sda1 rootfstype=ext4 "
        "resume=/dev/sda5 real_root=/dev/sda10 rd.root=/dev/sda1 quiet\n"
    )
    new, pairs = rewrite_cmdline(line, _replacer())
    assert new == (
        f"BOOT_IMAGE=/vmlinuz root=UUID={UUID_ROOT} ro nfsroot=/dev/sda1 rootfstype=ext4 "
        f"resume=UUID={UUID_SWAP} real_root=UUID={UUID_HOME} rd.root=/dev/sda1 quiet\n"
    )
    assert len(pairs) == 3


DEBIAN_DEFAULT_GRUB = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet resume=/dev/sda5"
GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 root=/dev/sda1"

# Uncomment to disable generation of recovery mode menu entries
#GRUB_DISABLE_RECOVERY="true"
# old: GRUB_CMDLINE_LINUX="root=/dev/sda1"
GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_OS_PROBER=true
"""


def test_default_grub_debian() -> None:
    new, pairs = rewrite_default_grub(DEBIAN_DEFAULT_GRUB, _replacer())
    assert f'GRUB_CMDLINE_LINUX_DEFAULT="quiet resume=UUID={UUID_SWAP}"\n' in new
    assert f'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 root=UUID={UUID_ROOT}"\n' in new
    assert '# old: GRUB_CMDLINE_LINUX="root=/dev/sda1"\n' in new  # a comment stays a comment
    assert f"{DISABLE_UUID_NOTE}\n#GRUB_DISABLE_LINUX_UUID=true\nGRUB_DISABLE_OS_PROBER=true\n" in new
    assert pairs == [
        ("/dev/sda5", f"UUID={UUID_SWAP}"),
        ("/dev/sda1", f"UUID={UUID_ROOT}"),
        ("GRUB_DISABLE_LINUX_UUID=true", "#GRUB_DISABLE_LINUX_UUID=true"),
    ]
    assert rewrite_default_grub(new, _replacer()) == (new, [])


def test_default_grub_device_needs_a_path() -> None:
    new, pairs = rewrite_default_grub(
        'GRUB_DEVICE="/dev/sda1"\nGRUB_DISABLE_LINUX_UUID="true"\n', _replacer()
    )
    assert new.startswith(f'GRUB_DEVICE="/dev/disk/by-uuid/{UUID_ROOT}"\n')
    assert pairs[0] == ("/dev/sda1", f"/dev/disk/by-uuid/{UUID_ROOT}")


DEBIAN_GRUB_CFG = """\
### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
\tset gfxpayload="${1}"
}
set linux_gfx_mode=
export linux_gfx_mode
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-/dev/sda1' {
\tload_video
\tinsmod gzio
\tif [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
\tinsmod part_msdos
\tinsmod ext2
\tset root='hd0,msdos1'
\tif [ x$feature_platform_search_hint = xy ]; then
\t  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint-efi=hd0,msdos1 --hint-baremetal=ahci0,msdos1  0b1c4a5e-7d2f-4e60-9a51-3f1c2d9e8a70
\telse
\t  search --no-floppy --fs-uuid --set=root 0b1c4a5e-7d2f-4e60-9a51-3f1c2d9e8a70
\tfi
\techo\t'Loading Linux 6.1.0-26-amd64 ...'
\tlinux\t/boot/vmlinuz-6.1.0-26-amd64 root=/dev/sda1 ro  console=ttyS0,115200n8 quiet
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/boot/initrd.img-6.1.0-26-amd64
}
"""  # noqa: E501 (real-world text)


def test_grub_cfg_only_kernel_lines() -> None:
    new, pairs = rewrite_grub_cfg(DEBIAN_GRUB_CFG, _replacer())
    assert pairs == [("/dev/sda1", f"UUID={UUID_ROOT}")]
    assert (
        f"\tlinux\t/boot/vmlinuz-6.1.0-26-amd64 root=UUID={UUID_ROOT} ro  console=ttyS0,115200n8 quiet\n"
        in new
    )
    assert "'gnulinux-simple-/dev/sda1'" in new  # a menu entry id, not a kernel argument
    assert "set root='hd0,msdos1'" in new  # GRUB's BIOS-order names do not change
    assert rewrite_grub_cfg(new, _replacer()) == (new, [])


def test_grub_cfg_linux16_and_linuxefi() -> None:
    text = "  linux16 /vmlinuz-3.10.0 root=/dev/sda1 ro\n  linuxefi /vmlinuz-3.10.0 root=/dev/sda1 ro\n"
    new, pairs = rewrite_grub_cfg(text, _replacer())
    assert new.count(f"root=UUID={UUID_ROOT}") == 2 and len(pairs) == 2


CENTOS6_GRUB_CONF = """\
# grub.conf generated by anaconda
#
# Note that you do not have to rerun grub after making changes to this file
# NOTICE:  You have a /boot partition.  This means that
#          all kernel and initrd paths are relative to /boot/, eg.
#          root (hd0,0)
#          kernel /vmlinuz-version ro root=/dev/sda2
#          initrd /initrd-[generic-]version.img
#boot=/dev/sda
default=0
timeout=5
splashimage=(hd0,0)/grub/splash.xpm.gz
hiddenmenu
title CentOS (2.6.32-754.35.1.el6.x86_64)
\troot (hd0,0)
\tkernel /vmlinuz-2.6.32-754.35.1.el6.x86_64 ro root=/dev/sda2 rd_NO_LUKS  KEYBOARDTYPE=pc KEYTABLE=us rd_NO_MD crashkernel=auto LANG=en_US.UTF-8 rd_NO_LVM rd_NO_DM rhgb quiet
\tinitrd /initramfs-2.6.32-754.35.1.el6.x86_64.img
title CentOS (2.6.32-754.el6.x86_64)
\troot (hd0,0)
\tkernel /vmlinuz-2.6.32-754.el6.x86_64 ro root=/dev/sda2 resume=/dev/sda5
\tinitrd /initramfs-2.6.32-754.el6.x86_64.img
"""  # noqa: E501 (real-world text)


def test_menu_lst_centos6() -> None:
    new, pairs = rewrite_menu_lst(CENTOS6_GRUB_CONF, _replacer())
    assert new.count(f"root=UUID={UUID_BOOT}") == 2
    assert f"resume=UUID={UUID_SWAP}\n" in new
    assert "#          kernel /vmlinuz-version ro root=/dev/sda2\n" in new  # anaconda's comment kept
    assert "#boot=/dev/sda\n" in new
    assert len(pairs) == 3
    assert rewrite_menu_lst(new, _replacer()) == (new, [])


def test_menu_lst_debian_kopt() -> None:
    text = "## ## End Default Options ##\n# kopt=root=/dev/sda1 ro\n# groot=(hd0,0)\n"
    new, _ = rewrite_menu_lst(text, _replacer())
    assert new == f"## ## End Default Options ##\n# kopt=root=UUID={UUID_ROOT} ro\n# groot=(hd0,0)\n"


RHEL8_BLS = """\
title Red Hat Enterprise Linux (4.18.0-513.5.1.el8_9.x86_64) 8.9 (Ootpa)
version 4.18.0-513.5.1.el8_9.x86_64
linux /vmlinuz-4.18.0-513.5.1.el8_9.x86_64
initrd /initramfs-4.18.0-513.5.1.el8_9.x86_64.img $tuned_initrd
options root=/dev/sda1 ro crashkernel=auto resume=/dev/sda5 rhgb quiet $tuned_params
id rhel-20231109152422-4.18.0-513.5.1.el8_9.x86_64
grub_users $grub_users
grub_arg --unrestricted
grub_class kernel
"""


def test_bls_entry_rhel8() -> None:
    new, pairs = rewrite_bls_entry(RHEL8_BLS, _replacer())
    assert f"options root=UUID={UUID_ROOT} ro crashkernel=auto resume=UUID={UUID_SWAP} rhgb quiet" in new
    assert len(pairs) == 2
    assert rewrite_bls_entry(new, _replacer()) == (new, [])


def test_bls_entry_with_lvm_is_untouched() -> None:
    text = "options root=/dev/mapper/rhel-root ro resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root\n"
    replace = _replacer()
    assert rewrite_bls_entry(text, replace) == (text, [])
    assert replace.unmapped == []


def test_grubenv_keeps_its_size() -> None:
    head = (
        "# GRUB Environment Block\nsaved_entry=rhel-4.18.0\n"
        "kernelopts=root=/dev/sda1 ro resume=/dev/sda5 rhgb\n"
    )
    text = head + "#" * (1024 - len(head))
    new, pairs = rewrite_grubenv(text, _replacer())
    assert len(new) == 1024 and len(pairs) == 2
    assert f"kernelopts=root=UUID={UUID_ROOT} ro resume=UUID={UUID_SWAP} rhgb\n#" in new
    assert rewrite_grubenv(new, _replacer()) == (new, [])
    with pytest.raises(ValueError, match="grubenv"):
        rewrite_grubenv(head + "#" * 3, _replacer())


SLES12_SYSCONFIG_BOOTLOADER = """\
## Path:\tSystem/Bootloader
## Description:\tBootloader configuration
## Type:\tlist(grub,grub2,grub2-efi,none)
## Default:\tgrub2
#
# Type of bootloader in use.
# For making the change effect run bootloader configuration tool
# and configure newly selected bootloader
#
#
LOADER_TYPE="grub2"

## Path:\tSystem/Bootloader
## Description:\tBootloader configuration
## Type:\tyesno
## Default:\t"no"
#
# Enable UEFI Secure Boot support
# This setting is only relevant to UEFI which supports UEFI. It won't
# take effect on any other firmware type.
#
#
SECURE_BOOT="no"
DEFAULT_APPEND="resume=/dev/sda1 splash=silent quiet showopts"
FAILSAFE_APPEND="showopts apm=off noresume edd=off powersaved=off nohz=off highres=off processor.max_cstate=1 nomodeset x11failsafe"
"""  # noqa: E501 (real-world text)
SLES12_DEFAULT_GRUB = """\
# If you change this file, run 'grub2-mkconfig -o /boot/grub2/grub.cfg' afterwards to update
# /boot/grub2/grub.cfg.

# Uncomment to set your own custom distributor. If you leave it unset or empty, the default
# policy is to determine the value from /etc/os-release
GRUB_DISTRIBUTOR=
GRUB_DEFAULT=saved
GRUB_HIDDEN_TIMEOUT=0
GRUB_HIDDEN_TIMEOUT_QUIET=true
GRUB_TIMEOUT=8
GRUB_CMDLINE_LINUX_DEFAULT=" resume=/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part1 splash=silent quiet showopts"
GRUB_CMDLINE_LINUX=""
"""  # noqa: E501 (real-world text)


def test_sles12(tmp_path: Path) -> None:
    new, pairs = rewrite_sysconfig_bootloader(SLES12_SYSCONFIG_BOOTLOADER, _replacer())
    assert f'DEFAULT_APPEND="resume=UUID={UUID_ROOT} splash=silent quiet showopts"\n' in new
    assert "noresume" in new and len(pairs) == 1
    # SLES names the resume partition by path; resolved when the VM has one SCSI controller.
    vm = _vm(tmp_path, _disk("scsi0:0", "a"))
    plan = _plan(vm)
    replace = Replacer(DeviceResolver.for_guest(device_map(vm, plan), plan), FACTS.get)
    new, pairs = rewrite_default_grub(SLES12_DEFAULT_GRUB, replace)
    assert f'GRUB_CMDLINE_LINUX_DEFAULT=" resume=UUID={UUID_ROOT} splash=silent quiet showopts"' in new
    assert len(pairs) == 1


def test_by_id_names_are_reported_not_guessed() -> None:
    by_id = "/dev/disk/by-id/ata-VMware_Virtual_SATA_Hard_Drive_00000000000000000001-part2"
    text = f'GRUB_CMDLINE_LINUX_DEFAULT="resume={by_id}"\n'
    replace = _replacer()
    assert rewrite_default_grub(text, replace) == (text, [])
    assert replace.unmapped == [
        "/dev/disk/by-id/ata-VMware_Virtual_SATA_Hard_Drive_00000000000000000001-part2"
    ]


def test_initramfs_resume() -> None:
    assert rewrite_initramfs_resume("RESUME=/dev/sda5\n", _replacer()) == (
        f"RESUME=UUID={UUID_SWAP}\n",
        [("/dev/sda5", f"UUID={UUID_SWAP}")],
    )
    assert rewrite_initramfs_resume('RESUME="/dev/sda5"\n', _replacer())[0] == f'RESUME="UUID={UUID_SWAP}"\n'
    assert rewrite_initramfs_resume("RESUME=none\n", _replacer()) == ("RESUME=none\n", [])


def test_device_map_names_only() -> None:
    text = "(fd0)\t/dev/fd0\n(hd0)\t/dev/sda\n(hd1)\t/dev/hdb\n"
    new, pairs = rewrite_device_map(text, _replacer().with_names_only())
    assert new == "(fd0)\t/dev/fd0\n(hd0)\t/dev/vda\n(hd1)\t/dev/vdb\n"
    assert pairs == [("/dev/sda", "/dev/vda"), ("/dev/hdb", "/dev/vdb")]


def test_describe() -> None:
    assert describe(
        "/etc/fstab", [("/dev/sda1", "UUID=x"), ("/dev/sda1", "UUID=x"), ("/dev/sda5", "UUID=y")]
    ) == ("/etc/fstab: /dev/sda1 -> UUID=x, /dev/sda5 -> UUID=y")
