"""What a vSphere job stores of its TLS options, and how a retry gets them back (``service.vsphere``)."""

from __future__ import annotations

import pytest

from vm2kvmd.core.vsphere.uri import TlsPolicy
from vm2kvmd.service.vsphere import split_tls, tls_mapping, tls_policy


@pytest.mark.parametrize(
    "tls",
    [
        TlsPolicy(),
        TlsPolicy(ca_file="/etc/vm2kvm/ca.pem"),
        TlsPolicy(thumbprint=":".join(["AB"] * 32)),
        TlsPolicy(no_verify=True),
    ],
)
def test_stored_trust_round_trips(tls: TlsPolicy) -> None:
    stored = {"pool": "default", "guest-conversion": False, **tls_mapping(tls)}
    trust, rest = split_tls(stored)
    assert rest == {"pool": "default", "guest-conversion": False}
    assert tls_policy(trust) == tls


def test_nothing_stored_without_tls_options() -> None:
    assert tls_mapping(TlsPolicy()) == {}
    assert split_tls({"name": "web"}) == ({}, {"name": "web"})
