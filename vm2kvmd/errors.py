"""The one error type of vm2kvm.

Every failure a user can cause or meet is a ``Vm2kvmError`` with a stable
``ErrorCode``.  The D-Bus layer turns it into ``org.vm2kvm.Error.<code>`` and the
CLI into one readable line; nothing else ever parses the message text.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine codes; the value is the last element of the D-Bus error name."""

    SOURCE_NOT_FOUND = "SourceNotFound"  # the VMX/OVA path does not exist or cannot be read
    INVALID_SOURCE = "InvalidSource"  # not a VMX file (binary, truncated, wrong kind)
    INVALID_VALUE = "InvalidValue"  # a key has a value we cannot use
    DISK_MISSING = "DiskMissing"  # a disk or extent file named by the source is absent
    INVALID_DISK = "InvalidDisk"  # a VMDK descriptor we cannot read
    UNSUPPORTED_DISK = "UnsupportedDisk"  # a VMDK type we do not convert (RDM, unknown createType)
    DISK_CHAIN_BROKEN = "DiskChainBroken"  # parent missing, CID mismatch, cycle
    PATH_OUTSIDE_SOURCE = "PathOutsideSource"  # a path escapes the VM directory without permission
    INVALID_OPTION = "InvalidOption"  # a caller option is unknown or malformed
    DOMAIN_EXISTS = "DomainExists"  # target domain name already defined
    VOLUME_EXISTS = "VolumeExists"  # target volume/file already present
    POOL_NOT_FOUND = "PoolNotFound"
    NETWORK_NOT_FOUND = "NetworkNotFound"
    NO_SPACE = "NoSpace"
    LIBVIRT_ERROR = "LibvirtError"  # libvirt refused something; message carries libvirt's words
    COPY_FAILED = "CopyFailed"  # qemu-img failed
    VERIFY_FAILED = "VerifyFailed"  # --verify: the copy differs from what it should hold
    MANIFEST_MISMATCH = "ManifestMismatch"  # an OVF package's .mf digest differs, or lists a missing file
    NO_GUEST_OS = "NoGuestOS"  # no operating system found on the disks (data disks only)
    UNSUPPORTED_GUEST = "UnsupportedGuest"  # an OS the guest conversion cannot convert
    CONVERSION_FAILED = "ConversionFailed"  # a step inside the guest failed (its tool's words)
    NO_REPORT = "NoReport"  # a job's report was asked for before it completed, or it failed
    NO_SUCH_JOB = "NoSuchJob"
    INVALID_STATE = "InvalidState"  # the job is not in a state that allows this (retry a running job)
    INTERRUPTED = "Interrupted"  # the daemon stopped (crash, power loss) while the job ran
    NOT_AUTHORIZED = "NotAuthorized"  # polkit (or its absence) denies the caller this action
    PERMISSION_DENIED = "PermissionDenied"  # the caller could not read a file it asks us to read
    CANCELLED = "Cancelled"
    INVALID_URI = "InvalidUri"  # an esx:// or vpx:// source URI we cannot use (names the part)
    INSECURE_CREDENTIALS = "InsecureCredentials"  # a ~/.netrc others can read, or a password in a URI
    LOGIN_FAILED = "LoginFailed"  # ESXi/vCenter refused the user name or password
    HOST_UNREACHABLE = "HostUnreachable"  # no answer, connection refused, name not resolved
    CERTIFICATE_NOT_TRUSTED = "CertificateNotTrusted"  # TLS verification failed; shows the thumbprint
    CERTIFICATE_MISMATCH = "CertificateMismatch"  # the pinned thumbprint differs; shows the server's
    INVENTORY_NOT_FOUND = "InventoryNotFound"  # a datacenter/cluster/host of a vpx:// URI is absent
    VM_NOT_FOUND = "VmNotFound"  # no VM of that name or id (with close matches)
    DATASTORE_INACCESSIBLE = "DatastoreInaccessible"  # a VM's disk is on a datastore vSphere cannot reach
    VSPHERE_ERROR = "VsphereError"  # another vSphere fault; the message carries vSphere's words
    INTERNAL = "Internal"  # a bug; details only in the daemon log
    SOURCE_POWERED_ON = "SourcePoweredOn"  # a vSphere VM to migrate is running (static migration only)
    SHUTDOWN_FAILED = "ShutdownFailed"  # --shutdown-source: the VM did not power off (Tools, timeout)
    GUEST_HIBERNATED = "GuestHibernated"  # Windows hibernated or shut down with Fast Startup (hiberfil.sys)
    GUEST_ENCRYPTED = "GuestEncrypted"  # the system volume is BitLocker-encrypted and no key was given
    DYNAMIC_DISK = "DynamicDisk"  # the Windows system volume is on a dynamic (LDM) disk
    LIBVIRT_UNAVAILABLE = "LibvirtUnavailable"  # libvirtd not reachable (at start, or past the retry bound)
    SOURCE_VANISHED = "SourceVanished"  # a source file disappeared or shrank while the job read it
    POOL_VANISHED = "PoolVanished"  # the target pool was removed or stopped while the job ran
    HARDWARE_LIMIT = "HardwareLimit"  # more devices than any VMware VM can have (names the key)
    KEY_REJECTED = "KeyRejected"  # a BitLocker volume did not open with the key given (names the volume)
    SOURCE_CHANGED = "SourceChanged"  # a vSphere VM was reconfigured while its disks were copied
    DISK_BUS_UNSUPPORTED = "DiskBusUnsupported"  # option disk-bus names a bus the guest has no driver for


class Vm2kvmError(Exception):
    """A failure with a stable code and the file/key/value it is about."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        value: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.file = file
        self.key = key
        self.value = value
        self.hint = hint

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """One readable line: where, what, and what to do."""
        where = []
        if self.file:
            where.append(self.file)
        if self.key:
            where.append(f"key {self.key}")
        prefix = ": ".join(where)
        text = self.message
        if self.value is not None and self.value not in text:
            text = f"{text} (value {self.value!r})"
        if prefix:
            text = f"{prefix}: {text}"
        if self.hint:
            text = f"{text}; {self.hint}"
        # One line, whatever the inputs contained.
        return " ".join(text.split())
