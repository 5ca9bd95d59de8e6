#!/usr/bin/env python3
"""Build the sample VMware Workstation VM that the demo and tests migrate.

The result is what a user copies off a Workstation host: a directory
``Sample Debian/`` (with the space) holding ``Sample Debian.vmx``, a system disk
split into 2 GB sparse extents and a monolithic sparse data disk.  The disks are
made with real tools and without root or loop mounts: ``sfdisk`` writes an MBR
into a raw image, ``mke2fs -d`` fills an ext4 filesystem at the partition's
offset from a directory, and ``qemu-img convert`` turns the raw images into
VMDKs.  The guest has no kernel; it is enough for inspection and the disk
pipeline, not for booting.

The build is cached in ``build/sample-vm/`` and redone only when this script
changed (or with ``--force``).  The VMX path is the only line on stdout.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "build" / "sample-vm"

VM_NAME = "Sample Debian"
MIB = 1024 * 1024
SYSTEM_DISK_SIZE = 256 * MIB
DATA_DISK_SIZE = 64 * MIB
PARTITION_START = 1 * MIB  # sector 2048, where fdisk/sfdisk put the first partition

SYSTEM_VMDK = f"{VM_NAME}.vmdk"
SYSTEM_EXTENT = f"{VM_NAME}-s001.vmdk"  # qemu-img names split extents like Workstation
DATA_VMDK = f"{VM_NAME}-0.vmdk"  # Workstation's name for a VM's second disk

# Fixed identities so every build describes the same machine.
BIOS_UUID = "56 4d 3b 8e 1f 2a 9c 47-a1 d5 6e 02 7c 9a 4b 31"
GENERATED_MAC = "00:0c:29:9a:4b:31"  # 00:0c:29 + the last three bytes of uuid.location
STATIC_MAC = "00:50:56:3a:7e:10"  # inside VMware's static range 00:50:56:00:00:00-3f:ff:ff
FS_UUID = "6f1c2f7e-4b8d-4e55-9a3c-1d2e3f405162"
MBR_ID = "0x5a3e1d07"
FAKE_TIME = "1700000000"  # E2FSPROGS_FAKE_TIME: stable inode and superblock times

GUEST_FILES = {
    "etc/hostname": "sample-debian\n",
    # /dev/sda1 on purpose: the classic pitfall when the disk becomes /dev/vda on virtio.
    "etc/fstab": (
        "# /etc/fstab: static file system information.\n"
        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
        "/dev/sda1 / ext4 defaults 0 1\n"
        "/dev/sr0 /media/cdrom0 udf,iso9660 user,noauto 0 0\n"
    ),
    "etc/debian_version": "12.8\n",
    "etc/os-release": (
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
        'NAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\n'
        'VERSION="12 (bookworm)"\n'
        "VERSION_CODENAME=bookworm\n"
        "ID=debian\n"
    ),
    "README": (
        "This is the vm2kvm sample VM.\n"
        "Its system disk was built by scripts/build_sample_vm.py with sfdisk, mke2fs -d and\n"
        "qemu-img; it has a filesystem but no kernel, so it does not boot.\n"
    ),
}

VMX = f"""\
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
virtualHW.productCompatibility = "hosted"
displayName = "{VM_NAME}"
guestOS = "debian11-64"
firmware = "bios"
nvram = "{VM_NAME}.nvram"
extendedConfigFile = "{VM_NAME}.vmxf"
numvcpus = "2"
cpuid.coresPerSocket = "2"
memsize = "1024"
mks.enable3d = "TRUE"
pciBridge0.present = "TRUE"
pciBridge4.present = "TRUE"
pciBridge4.virtualDev = "pcieRootPort"
pciBridge4.functions = "8"
pciBridge5.present = "TRUE"
pciBridge5.virtualDev = "pcieRootPort"
pciBridge5.functions = "8"
pciBridge6.present = "TRUE"
pciBridge6.virtualDev = "pcieRootPort"
pciBridge6.functions = "8"
pciBridge7.present = "TRUE"
pciBridge7.virtualDev = "pcieRootPort"
pciBridge7.functions = "8"
vmci0.present = "TRUE"
hpet0.present = "TRUE"
powerType.powerOff = "soft"
powerType.powerOn = "soft"
powerType.suspend = "soft"
powerType.reset = "soft"
tools.syncTime = "FALSE"
tools.upgrade.policy = "upgradeAtPowerCycle"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "{SYSTEM_VMDK}"
sata0.present = "TRUE"
sata0:1.present = "TRUE"
sata0:1.deviceType = "cdrom-image"
sata0:1.fileName = ""
sata0:1.startConnected = "FALSE"
nvme0.present = "TRUE"
nvme0:0.present = "TRUE"
nvme0:0.fileName = "{DATA_VMDK}"
floppy0.present = "FALSE"
ethernet0.present = "TRUE"
ethernet0.connectionType = "nat"
ethernet0.virtualDev = "e1000"
ethernet0.wakeOnPcktRcv = "FALSE"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "{GENERATED_MAC}"
ethernet0.generatedAddressOffset = "0"
ethernet1.present = "TRUE"
ethernet1.connectionType = "bridged"
ethernet1.virtualDev = "vmxnet3"
ethernet1.addressType = "static"
ethernet1.address = "{STATIC_MAC}"
sound.present = "TRUE"
sound.virtualDev = "es1371"
sound.fileName = "-1"
sound.autoDetect = "TRUE"
usb.present = "TRUE"
ehci.present = "TRUE"
usb.vbluetooth.startConnected = "TRUE"
svga.present = "TRUE"
svga.graphicsMemoryKB = "262144"
svga.vramSize = "268435456"
uuid.bios = "{BIOS_UUID}"
uuid.location = "{BIOS_UUID}"
pciBridge0.pciSlotNumber = "17"
pciBridge4.pciSlotNumber = "21"
pciBridge5.pciSlotNumber = "22"
pciBridge6.pciSlotNumber = "23"
pciBridge7.pciSlotNumber = "24"
scsi0.pciSlotNumber = "16"
usb.pciSlotNumber = "32"
ethernet0.pciSlotNumber = "33"
sound.pciSlotNumber = "34"
ehci.pciSlotNumber = "35"
sata0.pciSlotNumber = "36"
nvme0.pciSlotNumber = "224"
ethernet1.pciSlotNumber = "192"
vmci0.id = "2090486577"
monitor.phys_bits_used = "45"
cleanShutdown = "TRUE"
softPowerOff = "FALSE"
checkpoint.vmState = ""
"""

VMXF = f"""\
<?xml version="1.0"?>
<Foundry>
<VM>
<VMId type="string">52 9a 1c 04 7b 33 e2 58-0d 44 6e 90 a1 c7 3b 12</VMId>
<ClientMetaData>
<clientMetaDataAttributes/>
<HistoryEventList/></ClientMetaData>
<vmxPathName type="string">{VM_NAME}.vmx</vmxPathName></VM></Foundry>
"""

EXPECTED_FILES = (
    f"{VM_NAME}.vmx",
    f"{VM_NAME}.vmxf",
    f"{VM_NAME}.vmsd",
    SYSTEM_VMDK,
    SYSTEM_EXTENT,
    DATA_VMDK,
)


def log(message: str) -> None:
    print(f"sample-vm: {message}", file=sys.stderr, flush=True)


def tool(name: str) -> str:
    """Find a tool also where a non-root PATH lacks /usr/sbin (sfdisk, mke2fs)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(f"sample-vm: {name} not found; run scripts/setup.sh")
    return found


def run(args: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(args, input=stdin, env=env, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"sample-vm: {' '.join(args)} failed:\n{result.stderr.strip()}")


def script_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def build_system_disk(target: Path, work: Path) -> None:
    raw = work / "system.raw"
    with raw.open("wb") as f:
        f.truncate(SYSTEM_DISK_SIZE)
    start_sector = PARTITION_START // 512
    run(
        [tool("sfdisk"), "--quiet", "--no-reread", "--no-tell-kernel", str(raw)],
        stdin=f"label: dos\nlabel-id: {MBR_ID}\nstart={start_sector}, type=83, bootable\n",
    )
    root = work / "root"
    for rel, text in GUEST_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    fs_size_kib = (SYSTEM_DISK_SIZE - PARTITION_START) // 1024
    run(
        [
            tool("mke2fs"),
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "sample-root",
            "-U",
            FS_UUID,
            "-d",
            str(root),
            "-E",
            f"offset={PARTITION_START},root_owner=0:0",
            str(raw),
            f"{fs_size_kib}k",
        ],
        env={**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME},
    )
    convert(raw, target, "twoGbMaxExtentSparse")


def build_data_disk(target: Path, work: Path) -> None:
    raw = work / "data.raw"
    with raw.open("wb") as f:
        f.truncate(DATA_DISK_SIZE)
        f.write(b"vm2kvm sample data disk\n".ljust(512, b"\0"))
        # A recognisable megabyte in the middle, so a copy that drops data shows.
        f.seek(16 * MIB)
        f.write(bytes(range(256)) * 4096)
    convert(raw, target, "monolithicSparse")


def convert(raw: Path, target: Path, subformat: str) -> None:
    run(
        [
            tool("qemu-img"),
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            f"subformat={subformat},adapter_type=lsilogic,hwversion=19",
            str(raw),
            str(target),
        ]
    )


def is_current(out_dir: Path, digest: str) -> bool:
    stamp = out_dir / ".stamp"
    vm_dir = out_dir / VM_NAME
    try:
        built_with = stamp.read_text().strip()
    except FileNotFoundError:
        return False
    return built_with == digest and all((vm_dir / name).is_file() for name in EXPECTED_FILES)


def build(out_dir: Path, *, force: bool = False) -> Path:
    """Build the sample VM under ``out_dir`` unless it is current; return the VMX path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vmx = out_dir / VM_NAME / f"{VM_NAME}.vmx"
    digest = script_digest()
    with (out_dir / ".lock").open("w") as lock:
        # Serialises a demo and a test run that start building at the same time.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_current(out_dir, digest):
            return vmx
        log(f"building {out_dir / VM_NAME}")
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
            work = Path(tmp)
            vm_dir = work / VM_NAME
            vm_dir.mkdir()
            build_system_disk(vm_dir / SYSTEM_VMDK, work)
            build_data_disk(vm_dir / DATA_VMDK, work)
            (vm_dir / f"{VM_NAME}.vmx").write_text(VMX)
            (vm_dir / f"{VM_NAME}.vmxf").write_text(VMXF)
            (vm_dir / f"{VM_NAME}.vmsd").write_text("")
            (out_dir / ".stamp").unlink(missing_ok=True)
            shutil.rmtree(out_dir / VM_NAME, ignore_errors=True)
            vm_dir.rename(out_dir / VM_NAME)
        (out_dir / ".stamp").write_text(digest + "\n")
    return vmx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"cache directory (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    args = parser.parse_args(argv)
    print(build(args.out.resolve(), force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
