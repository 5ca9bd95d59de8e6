"""A real, bootable Debian 12 guest set up the way a VMware-era VM was, for boot tests.

``build_debian12(cache_root)`` returns a ``DebianGuest``: a VMware Workstation
VM (``debian12.vmx`` + a split sparse VMDK) whose guest knows nothing of KVM:

- root hard-coded as ``/dev/sda1`` in ``/etc/fstab`` and on the kernel command
  line (``GRUB_DISABLE_LINUX_UUID=true``), GRUB for BIOS on the MBR;
- an initramfs built with ``MODULES=list`` from the VMware-era drivers only
  (LSI Logic, AHCI/PIIX, sd, ext4, e1000): no virtio, checked after building;
- ifupdown configuring ``ens33``, the name udev gives the NIC VMware puts in
  PCI slot 33;
- open-vm-tools installed and enabled;
- ``vm2kvm-probe.service``, which reports the booted system on ttyS0 and
  powers off (``testbed/guests/debian12_files/``, read by ``testbed/guests/boot.py``).

The result is cached in ``cache_root/debian12-<hash>/`` where the hash covers
this file and ``debian12_files/``: editing either rebuilds, and stale builds
are removed.  A build happens in a temporary sibling directory renamed into
place when complete, under an ``flock`` so parallel pytest processes build it
once.  Downloaded packages stay in ``cache_root/debs`` so a rebuild does not
download them again.

How: ``debootstrap`` into a directory, configuration files written from here,
``update-initramfs`` in a plain chroot (needs no /proc), ``mke2fs -d`` to
build the root filesystem inside the partition of a raw disk with no loop
device, and one libguestfs appliance (TCG) to run ``grub-install`` and
``update-grub`` where the disk really is ``/dev/sda``.  Needs root.

    python -m testbed.guests.debian12 [--out DIR]     # build (or reuse), print the VMX path
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_ROOT = REPO / "build" / "guests"
FILES_DIR = Path(__file__).resolve().parent / "debian12_files"

NAME = "debian12"
SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "linux-image-amd64",
    "grub-pc",
    "systemd-sysv",
    "udev",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "open-vm-tools",
    "initramfs-tools",
    "kmod",
)
HOSTNAME = "vm2kvm-debian12"
MAC = "00:50:56:3a:12:c4"
NIC_NAME = "ens33"  # what udev names the NIC in VMware's PCI slot 33
BIOS_UUID = "56 4d 7a 2b 10 c4 3e 11-8f 61 0d 12 a5 b3 c9 01"
DISK_SIZE = 4 << 30
PARTITION_START = 1 << 20
INITRAMFS_MODULES = ("mptspi", "mptscsih", "sd_mod", "ahci", "libahci", "ata_piix", "ext4", "e1000")
# What a guest converted for KVM needs and this one must not have.
FORBIDDEN_INITRAMFS_MODULES = ("virtio_blk", "virtio_pci", "virtio_scsi", "virtio_net")
REQUIRED_INITRAMFS_MODULES = ("ahci", "libahci", "sd_mod", "ext4", "mptspi")
# Reproducible ids, so two builds of one builder version describe the same disk.
MBR_ID = "0x7a2b10c4"
FS_UUID = "5d0a4b9e-2c1f-4e3a-9b77-31c4e0a2d6f1"

ETC_FILES: dict[str, str] = {
    "etc/hostname": f"{HOSTNAME}\n",
    "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/fstab": "# <file system> <mount point> <type> <options> <dump> <pass>\n"
    "/dev/sda1 / ext4 errors=remount-ro 0 1\n",
    "etc/network/interfaces": "source /etc/network/interfaces.d/*\n\n"
    "auto lo\niface lo inet loopback\n\n"
    f"allow-hotplug {NIC_NAME}\niface {NIC_NAME} inet dhcp\n",
    "etc/default/grub": "GRUB_DEFAULT=0\n"
    "GRUB_TIMEOUT=0\n"
    "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"\n'
    "GRUB_DISABLE_LINUX_UUID=true\n"
    "GRUB_DISABLE_LINUX_PARTUUID=true\n"
    "GRUB_DISABLE_OS_PROBER=true\n"
    "GRUB_TERMINAL=serial\n"
    'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n',
    "etc/initramfs-tools/modules": "# The drivers of the VMware VM this came from; no virtio.\n"
    + "".join(f"{m}\n" for m in INITRAMFS_MODULES),
}


@dataclass(frozen=True)
class DebianGuest:
    """A built (read-only) VMware VM holding the Debian 12 guest."""

    directory: Path
    vmx: Path
    disk: Path  # the VMDK descriptor the VMX names
    files: tuple[Path, ...]  # every file of the VM
    mac: str = MAC
    nic_name: str = NIC_NAME
    hostname: str = HOSTNAME
    bios_uuid: str = BIOS_UUID
    timings: dict[str, float] = field(default_factory=dict, compare=False, hash=False)

    def checksums(self) -> dict[str, str]:
        """SHA-256 of every file of the VM by name; compare before and after a migration."""
        sums: dict[str, str] = {}
        for path in self.files:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            sums[path.name] = digest.hexdigest()
        return sums


def builder_hash() -> str:
    """Covers every input of the build, so editing the builder rebuilds the guest."""
    digest = hashlib.sha256()
    for path in [Path(__file__).resolve(), *sorted(FILES_DIR.iterdir())]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_debian12(cache_root: Path = DEFAULT_CACHE_ROOT) -> DebianGuest:
    """The guest in ``cache_root/debian12-<hash>/``, built first if needed (blocking, minutes)."""
    cache_root.mkdir(parents=True, exist_ok=True)
    final = cache_root / f"{NAME}-{builder_hash()}"
    if not (final / "complete").exists():
        with _locked(cache_root / f"{NAME}.lock"):
            # Another process may have built it while we waited for the lock.
            if not (final / "complete").exists():
                _build(cache_root, final)
                _remove_stale(cache_root, keep=final)
    return _guest(final)


def _guest(final: Path) -> DebianGuest:
    vm_dir = final / "vm"
    timings_file = final / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    return DebianGuest(
        directory=vm_dir,
        vmx=vm_dir / f"{NAME}.vmx",
        disk=vm_dir / f"{NAME}.vmdk",
        files=tuple(sorted(p for p in vm_dir.iterdir() if p.is_file())),
        timings=timings,
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process building the guest ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale(cache_root: Path, keep: Path) -> None:
    # Each build is about 1 GB; only the current one is of use.  Runs under the lock,
    # so a temporary directory seen here belongs to a build that died.
    for entry in cache_root.iterdir():
        if entry != keep and entry.is_dir() and entry.name.startswith((f"{NAME}-", f".{NAME}-")):
            shutil.rmtree(entry, ignore_errors=True)


def _log(message: str) -> None:
    print(f"debian12: {message}", file=sys.stderr, flush=True)


def _run(args: list[str], *, input: str | None = None, timeout: float = 1800) -> str:
    result = subprocess.run(args, input=input, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def _build(cache_root: Path, final: Path) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("building the Debian 12 guest needs root (debootstrap, chroot)")
    debs = cache_root / "debs"
    debs.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache_root))
    timings: dict[str, float] = {}
    try:
        root = work / "root"
        begin = time.monotonic()
        _log(f"debootstrap {SUITE} into {root} (packages cached in {debs})")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                debian_mirror(),
            ]
        )
        timings["debootstrap"] = time.monotonic() - begin

        begin = time.monotonic()
        _configure(root)
        _rebuild_initramfs(root)
        raw = work / "disk.raw"
        _make_disk(root, raw)
        shutil.rmtree(root)  # 900 MB no longer needed
        _install_grub(raw)
        vm_dir = work / "vm"
        vm_dir.mkdir()
        _convert(raw, vm_dir / f"{NAME}.vmdk")
        raw.unlink()
        _write_vmx(vm_dir / f"{NAME}.vmx")
        for path in vm_dir.iterdir():
            # Tests checksum these to prove a migration leaves its source alone.
            path.chmod(0o444)
        timings["image"] = time.monotonic() - begin
        (work / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
        (work / "complete").write_text("")
        work.chmod(0o755)  # mkdtemp's 0700 would keep a non-root qemu out
        work.rename(final)
        _log(f"built {final} (debootstrap {timings['debootstrap']:.0f} s, image {timings['image']:.0f} s)")
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def debian_mirror() -> str:
    """The host's Debian mirror for bookworm (deb822 or one-line sources), else deb.debian.org."""
    sources = Path("/etc/apt")
    candidates = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (line.partition(":") for line in stanza.splitlines())
                    if v and not k.startswith("#")
                )
                if SUITE in fields.get("suites", "").split() and "deb" in fields.get("types", "").split():
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == SUITE:
                    return m.group(1)
    return FALLBACK_MIRROR


def _configure(root: Path) -> None:
    for rel, text in ETC_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    conf = root / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))

    probe = root / "usr/local/sbin/vm2kvm-probe"
    probe.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FILES_DIR / "vm2kvm-probe", probe)
    probe.chmod(0o755)
    unit = root / "etc/systemd/system/vm2kvm-probe.service"
    shutil.copyfile(FILES_DIR / "vm2kvm-probe.service", unit)
    unit.chmod(0o644)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    if not (wants / "open-vm-tools.service").is_symlink():
        raise RuntimeError("open-vm-tools.service is not enabled after installing open-vm-tools")

    # The packages are in cache_root/debs; in the image they would only take space.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)


def _rebuild_initramfs(root: Path) -> None:
    _run(["chroot", str(root), "update-initramfs", "-u", "-k", "all"])
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if len(initrds) != 1:
        raise RuntimeError(f"expected one initramfs, found {initrds}")
    modules = initramfs_modules(initrds[0])
    present = sorted(set(FORBIDDEN_INITRAMFS_MODULES) & modules)
    missing = sorted(set(REQUIRED_INITRAMFS_MODULES) - modules)
    if present or missing:
        raise RuntimeError(
            f"initramfs {initrds[0].name} is not VMware-era: has {present}, lacks {missing}; "
            f"modules: {sorted(modules)}"
        )


def initramfs_modules(initrd: Path) -> set[str]:
    """Kernel module names in an initramfs (``lsinitramfs``), ``-`` spelled ``_``."""
    names = set()
    for line in _run(["lsinitramfs", str(initrd)]).splitlines():
        m = re.search(r"/([^/]+)\.ko(?:\.[a-z]+)?$", line)
        if m:
            names.add(m.group(1).replace("-", "_"))
    return names


def _make_disk(root: Path, raw: Path) -> None:
    with raw.open("wb") as f:
        f.truncate(DISK_SIZE)
    _run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)],
        input=f"label: dos\nlabel-id: {MBR_ID}\nstart={PARTITION_START // 512}, type=83, bootable\n",
    )
    # mke2fs writes the filesystem straight into the partition: no loop device, no mount.
    _run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-U",
            FS_UUID,
            "-d",
            str(root),
            "-E",
            f"offset={PARTITION_START}",
            str(raw),
            f"{(DISK_SIZE - PARTITION_START) // 1024}k",
        ]
    )


def _install_grub(raw: Path) -> None:
    import guestfs  # Debian's python3-guestfs; imported late so the module loads without it

    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
        g.add_drive_opts(str(raw), format="raw", readonly=False)
        g.launch()
        g.mount("/dev/sda1", "/")
        # grub-install and update-grub see the kernel's device names, which libguestfs
        # translates for its API only.  The appliance kernel probes its disks
        # asynchronously: on a loaded machine ours is /dev/sdb as often as not (and
        # /dev/sda the appliance's own), whatever scsi_mod.scan says.
        partition = g.command(["findmnt", "-no", "SOURCE", "/"]).strip()
        m = re.fullmatch(r"/dev/sd([a-z])1", partition)
        if not m:
            raise RuntimeError(f"the appliance mounted our root as {partition!r}")
        g.command(["/usr/sbin/grub-install", "--target=i386-pc", f"/dev/sd{m.group(1)}"])
        g.command(["/usr/sbin/update-grub"])
        grub_cfg = as_first_disk(g.cat("/boot/grub/grub.cfg"), m.group(1))
        g.write("/boot/grub/grub.cfg", grub_cfg)
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    linux_lines = [line for line in grub_cfg.splitlines() if line.strip().startswith("linux")]
    if not linux_lines or not all(" root=/dev/sda1 " in line + " " for line in linux_lines):
        raise RuntimeError(f"grub.cfg does not boot root=/dev/sda1:\n{grub_cfg}")
    with raw.open("rb") as f:
        mbr = f.read(512)
    if b"GRUB" not in mbr or mbr[510:] != b"\x55\xaa":
        raise RuntimeError("grub-install left no GRUB boot code in the MBR")


def as_first_disk(grub_cfg: str, letter: str) -> str:
    """``grub_cfg`` as update-grub writes it when the disk is ``/dev/sda`` (BIOS hd0), not sd<letter>.

    update-grub names the disk three ways (compared on both names): the
    kernel's ``root=/dev/sdX1`` and GRUB's ``hdN``/``ahciN`` search hints.
    """
    if letter == "a":
        return grub_cfg
    index = ord(letter) - ord("a")
    grub_cfg = re.sub(rf"/dev/sd{letter}(\d)", r"/dev/sda\1", grub_cfg)
    grub_cfg = re.sub(rf"\b(hd|ahci){index},", r"\g<1>0,", grub_cfg)
    if re.search(r"/dev/sd[b-z]|\bhd[1-9]|\bahci[1-9]", grub_cfg):
        raise RuntimeError(f"grub.cfg still names a disk other than the first:\n{grub_cfg}")
    return grub_cfg


def _convert(raw: Path, vmdk: Path) -> None:
    _run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse,adapter_type=lsilogic,hwversion=19",
            str(raw),
            str(vmdk),
        ]
    )


def _write_vmx(path: Path) -> None:
    lines = [
        '.encoding = "UTF-8"',
        'config.version = "8"',
        'virtualHW.version = "19"',
        'displayName = "vm2kvm Debian 12"',
        'guestOS = "debian12-64"',
        'numvcpus = "1"',
        'cpuid.coresPerSocket = "1"',
        'memsize = "1024"',
        f'uuid.bios = "{BIOS_UUID}"',
        'scsi0.present = "TRUE"',
        'scsi0.virtualDev = "lsilogic"',
        'scsi0.pciSlotNumber = "16"',
        'scsi0:0.present = "TRUE"',
        f'scsi0:0.fileName = "{NAME}.vmdk"',
        'ethernet0.present = "TRUE"',
        'ethernet0.virtualDev = "e1000"',
        'ethernet0.connectionType = "nat"',
        'ethernet0.addressType = "static"',
        f'ethernet0.address = "{MAC}"',
        'ethernet0.pciSlotNumber = "33"',
        'tools.syncTime = "FALSE"',
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE_ROOT, help="cache root (build/guests)")
    args = parser.parse_args(argv)
    print(build_debian12(args.out).vmx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
