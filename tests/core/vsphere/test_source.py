"""A vSphere job's source: ``URI#VM`` both ways, the password in no repr; power options."""

from __future__ import annotations

import pytest

from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.vsphere.source import VsphereSource, job_source, split_job_source
from vm2kvmd.core.vsphere.uri import TlsPolicy
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def test_job_source_both_ways() -> None:
    uri = "vpx://admin@vc1/DC1/esx1?no_verify=1"
    assert split_job_source(job_source(uri, "web #2")) == (uri, "web #2")
    assert split_job_source("/srv/vms/web/web.vmx") is None
    assert split_job_source("/srv/vms/a#b.vmx") is None


def test_the_password_is_in_no_repr() -> None:
    source = VsphereSource("esx://root@esx1/", "web", TlsPolicy(), "hunter2-xyzzy")
    assert "hunter2-xyzzy" not in repr(source) and "hunter2-xyzzy" not in source.label
    assert source.label == "esx://root@esx1/#web"


def test_force_only_with_shutdown_source() -> None:
    assert MigrateOptions.from_mapping({"shutdown-source": True, "force": True}).to_mapping() == {
        "shutdown-source": True,
        "force": True,
    }
    with pytest.raises(Vm2kvmError) as err:
        MigrateOptions.from_mapping({"force": True})
    assert err.value.code is ErrorCode.INVALID_OPTION and err.value.key == "force"
