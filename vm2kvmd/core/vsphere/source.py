"""A VM on ESXi/vCenter as a job's source: the URI, the VM, how TLS is trusted, the password.

Pure.  The password lives in the daemon's memory only, for the job's own logins: it is in no
repr, and a job's ``Source`` (``job_source``: ``URI#VM``) never holds it (the URI parser refuses
a password in a URI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vm2kvmd.core.vsphere.uri import TlsPolicy

__all__ = ["VsphereSource", "job_source", "split_job_source"]

# Between the URI and the VM in a job's Source: a URI has no unencoded "#".
_VM_SEPARATOR = "#"


def job_source(uri: str, vm: str) -> str:
    """What a vSphere job shows as its ``Source``: ``URI#VM``."""
    return f"{uri}{_VM_SEPARATOR}{vm}"


def split_job_source(source: str) -> tuple[str, str] | None:
    """``(uri, vm)`` of a vSphere job's source; None for a local path."""
    if not source.startswith(("esx://", "vpx://")) or _VM_SEPARATOR not in source:
        return None
    uri, _, vm = source.partition(_VM_SEPARATOR)
    return uri, vm


@dataclass(frozen=True)
class VsphereSource:
    uri: str  # as the caller wrote it, without a password
    vm: str  # name or managed object id
    tls: TlsPolicy
    password: str = field(repr=False)

    @property
    def label(self) -> str:
        return job_source(self.uri, self.vm)
