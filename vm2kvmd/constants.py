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
DEFAULT_STATE_DIR: Final = "/var/lib/vm2kvm"
DEFAULT_CONFIG_PATH: Final = "/etc/vm2kvm/vm2kvmd.conf"
# Disks of one VM copied at once: overlaps one disk's reads with another's writes.
DEFAULT_DISK_PARALLELISM: Final = 2
DEFAULT_MAX_PARALLEL_JOBS: Final = 2
# Disk copies running at once over all jobs of the host: bounds the I/O load that
# max_parallel_jobs x disk_parallelism could otherwise reach.
DEFAULT_HOST_DISK_PARALLELISM: Final = 4
# HTTP connections to one ESXi/vCenter host from the disk readers of all jobs (each reader: one
# per file of a disk's chain): ESXi throttles transfers and answers 503 past its own limit.
DEFAULT_CONNECTIONS_PER_HOST: Final = 8
# Finished jobs kept in the job store (older ones are pruned, oldest first).
DEFAULT_JOB_RETENTION: Final = 1000
# How long a running job waits for a libvirtd that went away (a restart by apt takes seconds)
# before it fails with LibvirtUnavailable.
DEFAULT_LIBVIRT_RETRY_SECONDS: Final = 120

# journald MESSAGE_IDs (128-bit, lower-case hex, no dashes, as sd-id128 prints them) of the job
# lifecycle messages; fixed forever so admins can `journalctl MESSAGE_ID=...` (docs/logging.md).
MESSAGE_ID_JOB_STARTED: Final = "14da782597374c038b4fa2964f9fa6ce"
MESSAGE_ID_JOB_FINISHED: Final = "8b7d29bb585d4a1f94ea3e35f484ee56"
MESSAGE_ID_JOB_FAILED: Final = "3a8bc417c8c841458604fed35c225afc"
MESSAGE_ID_JOB_CANCELLED: Final = "b940932567d64bfe8203f964753f5a12"
# Structured journal fields on every job log line.
FIELD_JOB_ID: Final = "VM2KVM_JOB_ID"
FIELD_PHASE: Final = "VM2KVM_PHASE"

# XML namespace of our <metadata> element in generated domains.
METADATA_NS: Final = "https://vm2kvm.org/xmlns/source/1"


def error_name(code: ErrorCode) -> str:
    return ERROR_PREFIX + code.value


def job_path(number: int) -> str:
    return f"{JOBS_PATH}/{number}"
