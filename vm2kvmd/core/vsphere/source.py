"""A VM on ESXi/vCenter as a job's source: the URI, the VM, how TLS is trusted, the password.

Pure.  The password lives in the daemon's memory only, for the job's own logins: it is in no
repr, and a job's ``Source`` (``job_source``: ``URI#VM``) never holds it (the URI parser refuses
a password in a URI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vm2kvmd.core.vsphere.uri import TlsPolicy, job_source, split_job_source

__all__ = ["VsphereSource", "job_source", "split_job_source"]


@dataclass(frozen=True)
class VsphereSource:
    uri: str  # as the caller wrote it, without a password
    vm: str  # name or managed object id
    tls: TlsPolicy
    password: str = field(repr=False)

    @property
    def label(self) -> str:
        return job_source(self.uri, self.vm)
