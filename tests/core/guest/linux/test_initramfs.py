"""virtio drivers in the initramfs: module choice, config edits, commands, listing checks."""

from __future__ import annotations

from vm2kvmd.core.guest.info import Kernel
from vm2kvmd.core.guest.linux import initramfs as li

DEBIAN_MODULES_FILE = """\
# List of modules that you want to include in your initramfs.
# They will be loaded at boot time in the order below.
#
# Syntax:  module_name [args ...]
#
# You must run update-initramfs(8) to effect this change.
#
# Examples:
#
# raid1
# sd_mod
vmw_pvscsi
"""

DEBIAN_INITRAMFS_CONF = """\
#
# initramfs.conf
# Configuration file for mkinitramfs(8). See initramfs.conf(5).
#
# Note that configuration options from this file can be overridden
# by config files in the /etc/initramfs-tools/conf.d directory.

#
# MODULES: [ most | netboot | dep | list ]
#
# most - Add most filesystem and all harddrive drivers.
#
# dep - Try and guess which modules to load.
#
# netboot - Add the base modules, network modules, but skip block devices.
#
# list - Only include modules from the 'additional modules' list
#

MODULES=dep

#
# BUSYBOX: [ y | n | auto ]
BUSYBOX=auto
"""

K = Kernel(
    "5.10.0-28-amd64",
    "/boot/vmlinuz-5.10.0-28-amd64",
    "/boot/initrd.img-5.10.0-28-amd64",
    modules=frozenset({"virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi", "sd_mod", "ahci"}),
)


def test_plan_virtio_blk_leaves_the_nic_driver_out() -> None:
    # virtio_net in the initramfs would let udev rename the NIC before the real root's pins apply.
    plan = li.plan_modules(K, "virtio", "virtio")
    assert plan.add == ("virtio_pci", "virtio_blk")
    assert plan.builtin == () and plan.missing == () and not plan.disk_missing


def test_plan_scsi_needs_sd_mod_and_skips_builtins() -> None:
    k = Kernel("5.4.0-150-generic", "/boot/vmlinuz", "/boot/initrd.img",
               modules=frozenset({"sd_mod"}), builtins=frozenset({"virtio_pci", "virtio_scsi"}))  # fmt: skip
    plan = li.plan_modules(k, "scsi", "e1000")
    assert plan.add == ("sd_mod",)
    assert plan.builtin == ("virtio_pci", "virtio_scsi")


def test_plan_missing_disk_driver() -> None:
    k = Kernel("2.6.18-8.el5", "/boot/vmlinuz-2.6.18-8.el5", None, modules=frozenset({"ahci"}))
    plan = li.plan_modules(k, "virtio", "virtio")
    assert plan.disk_missing
    assert plan.missing == ("virtio_pci", "virtio_blk")
    assert li.plan_modules(k, "sata", "e1000").add == ()


def test_modules_file_appends_with_a_marker_and_skips_listed() -> None:
    new, added = li.add_to_modules_file(DEBIAN_MODULES_FILE, ("virtio_pci", "virtio_blk", "vmw_pvscsi"))
    assert added == ("virtio_pci", "virtio_blk")
    assert new == DEBIAN_MODULES_FILE + li.MARKER + "\nvirtio_pci\nvirtio_blk\n"
    again, added_again = li.add_to_modules_file(new, ("virtio_pci", "virtio-blk"))
    assert again == new and added_again == ()


def test_modules_file_without_final_newline_or_empty() -> None:
    new, _ = li.add_to_modules_file("raid1", ("virtio_blk",))
    assert new == f"raid1\n{li.MARKER}\nvirtio_blk\n"
    new, _ = li.add_to_modules_file("", ("virtio_blk",))
    assert new == f"{li.MARKER}\nvirtio_blk\n"


def test_modules_dep_becomes_most() -> None:
    new = li.modules_dep_to_most(DEBIAN_INITRAMFS_CONF)
    assert new is not None
    assert "\nMODULES=most\n" in new and "\nMODULES=dep\n" not in new
    assert "# dep - Try and guess which modules to load." in new  # comments untouched
    assert li.modules_dep_to_most('MODULES="dep"\n') is not None
    assert li.modules_dep_to_most("MODULES=most\n") is None
    assert li.modules_dep_to_most("# MODULES=dep\n") is None


def test_dracut_conf_and_command() -> None:
    conf = li.dracut_conf_text(("virtio_pci", "virtio_blk"))
    assert conf.endswith('add_drivers+=" virtio_pci virtio_blk "\n')
    assert li.dracut_command("/boot/initramfs-4.18.0.img", "4.18.0", ("virtio_pci", "virtio_blk")) == [
        "dracut", "-f", "--add-drivers", "virtio_pci virtio_blk", "/boot/initramfs-4.18.0.img", "4.18.0",
    ]  # fmt: skip


def test_suse_initrd_modules() -> None:
    sles11 = (
        "## Type:        string\n"
        "## Command:     /sbin/mkinitrd\n"
        "#\n"
        "# This variable contains the list of modules to be added to the initial\n"
        '# ramdisk by calling the script "mkinitrd"\n'
        '#\nINITRD_MODULES="mptspi processor thermal ata_piix ata_generic piix ide_pci_generic '
        'fan jbd ext3 edd"\n'
        '\n## Type:        string\nDOMU_INITRD_MODULES="xennet xenblk"\n'
    )
    new, added = li.add_initrd_modules(sles11, ("virtio_pci", "virtio_blk"))
    assert added == ("virtio_pci", "virtio_blk")
    assert (
        'INITRD_MODULES="mptspi processor thermal ata_piix ata_generic piix ide_pci_generic fan jbd ext3 edd '
        'virtio_pci virtio_blk"\n'
    ) in new
    assert 'DOMU_INITRD_MODULES="xennet xenblk"' in new
    created, _ = li.add_initrd_modules('MODULES_LOADED_ON_BOOT=""', ("virtio_blk",))
    assert created.endswith('INITRD_MODULES="virtio_blk"\n')
    assert li.add_initrd_modules(new, ("virtio_blk",)) == (new, ())


def test_mkinitrd_commands() -> None:
    k, i = "/boot/vmlinuz-3.0.101-63-default", "/boot/initrd-3.0.101-63-default"
    assert li.suse_mkinitrd_command(k, i) == ["mkinitrd", "-k", k, "-i", i]
    assert li.redhat_mkinitrd_command("/boot/initrd-2.6.18.img", "2.6.18", ("virtio_pci", "virtio_blk")) == [
        "mkinitrd", "-f", "--with=virtio_pci", "--with=virtio_blk", "/boot/initrd-2.6.18.img", "2.6.18",
    ]  # fmt: skip
    assert li.shell_line(["dracut", "--add-drivers", "a b"]) == "dracut --add-drivers 'a b'"


def test_modules_in_listing_of_lsinitramfs_and_lsinitrd() -> None:
    lsinitramfs = [
        "usr/lib/modules/5.10.0-28-amd64/kernel/drivers/block/virtio_blk.ko",
        "usr/lib/modules/5.10.0-28-amd64/kernel/drivers/virtio/virtio_pci.ko",
        "usr/lib/modules/5.10.0-28-amd64/modules.dep",
    ]
    assert li.modules_in_listing(lsinitramfs) == {"virtio_blk", "virtio_pci"}
    lsinitrd = [
        "-rw-r--r--   1 root     root        12345 Nov 15 00:00 "
        "usr/lib/modules/4.18.0-513.el8.x86_64/kernel/drivers/block/virtio_blk.ko.xz",
        "drwxr-xr-x   3 root     root            0 Nov 15 00:00 usr/lib/modules",
        "",
    ]
    assert li.modules_in_listing(lsinitrd) == {"virtio_blk"}
