"""All bus names, object paths, interfaces and error names in one place."""

from __future__ import annotations

from typing import Final

from vm2kvmd.errors import ErrorCode

BUS_NAME: Final = "org.vm2kvm.Daemon1"
MANAGER_PATH: Final = "/org/vm2kvm/Daemon1"
JOBS_PATH: Final = "/org/vm2kvm/Daemon1/jobs"
MANAGER_IFACE: Final = "org.vm2kvm.Manager1"
JOB_IFACE: Final = "org.vm2kvm.Job1"
ERROR_PREFIX: Final = "org.vm2kvm.Error."

PROPERTIES_IFACE: Final = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_IFACE: Final = "org.freedesktop.DBus.ObjectManager"

DEFAULT_LIBVIRT_URI: Final = "qemu:///system"
DEFAULT_POOL: Final = "default"
DEFAULT_NETWORK: Final = "default"
# Where the daemon keeps per-job overlays (vm2kvmd --work-dir).  Not /tmp: that is often a
# small tmpfs, and a guest conversion writes its changes into the overlays.
DEFAULT_WORK_DIR: Final = "/var/tmp/vm2kvm"

# XML namespace of our <metadata> element in generated domains.
METADATA_NS: Final = "https://vm2kvm.org/xmlns/source/1"


def error_name(code: ErrorCode) -> str:
    return ERROR_PREFIX + code.value


def job_path(number: int) -> str:
    return f"{JOBS_PATH}/{number}"
