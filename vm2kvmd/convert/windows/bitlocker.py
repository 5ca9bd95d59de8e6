"""BitLocker volumes opened with the caller's key before inspection (``--key-file``).

virt-v2v takes ``--key SELECTOR``; we take the key as a file descriptor (the
caller's file, read once by the daemon) and offer it to every BitLocker volume
of the VM through libguestfs' ``cryptsetup_open`` with ``crypttype="bitlk"``
(libguestfs 1.48 in Debian 12; cryptsetup 2.6 opens BitLocker with a recovery
key or a passphrase).  Each opened volume becomes ``/dev/mapper/bitlk-<part>``;
inspection then sees the Windows on it, and everything the conversion writes
goes through dm-crypt, encrypted again, into the job's overlay.

A volume that does not open is ``KeyRejected`` naming the volume, never the
key: cryptsetup's reason is passed on with the key scrubbed out of it (it does
not print keys, but libguestfs error strings are not ours to trust).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.core.secret import Secret
from vm2kvmd.errors import ErrorCode, Vm2kvmError

MAP_PREFIX = "bitlk-"
_MAPPER = "/dev/mapper/"


def map_name(volume: str) -> str:
    """The device-mapper name of an opened volume: ``/dev/sda2`` -> ``bitlk-sda2``."""
    return MAP_PREFIX + volume.rsplit("/", 1)[-1]


def underlying(volume: str) -> str:
    """The partition an opened BitLocker volume decrypts (any other volume: itself)."""
    if volume.startswith(_MAPPER + MAP_PREFIX):
        return "/dev/" + volume[len(_MAPPER + MAP_PREFIX) :]
    return volume


def unlock(g: GuestFS, volumes: Sequence[str], key: Secret, log: Callable[[str], None]) -> list[str]:
    """Open every volume in ``volumes`` with ``key``; the mapped devices, in order.

    The first volume that refuses the key is ``KeyRejected``; volumes opened
    before it stay open in the appliance, which the job shuts down anyway.
    """
    if not g.feature_available(["luks"]):
        raise Vm2kvmError(
            ErrorCode.CONVERSION_FAILED,
            "the libguestfs appliance cannot open BitLocker volumes (its cryptsetup is missing)",
            hint="install cryptsetup-bin on the vm2kvmd host (the appliance is built from the host's "
            "packages) and migrate again",
        )
    opened = []
    for volume in volumes:
        name = map_name(volume)
        try:
            g.cryptsetup_open(volume, key.text, name, crypttype="bitlk")
        except RuntimeError as err:
            reason = key.scrub(str(err).strip().splitlines()[-1] if str(err).strip() else "refused")
            raise Vm2kvmError(
                ErrorCode.KEY_REJECTED,
                f"the BitLocker volume {volume} did not open with the key given ({reason})",
                value=volume,
                hint="give the volume's 48-digit recovery key (manage-bde -protectors -get C: in the "
                "guest shows it) or its password in the --key-file file; or turn BitLocker off in "
                "the guest (manage-bde -off C:) and migrate again",
            ) from None
        log(f"BitLocker volume {volume} opened as {_MAPPER}{name}")
        opened.append(_MAPPER + name)
    return opened
