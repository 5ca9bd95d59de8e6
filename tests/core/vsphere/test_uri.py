"""Source URIs as virt-v2v spells them: what is accepted, what each refusal names, and that a
password written into a URI never comes back in a message."""

from __future__ import annotations

import pytest

from vm2kvmd.core.vsphere.uri import (
    ESX_FORM,
    VPX_FORM,
    TlsPolicy,
    VsphereUri,
    normalize_thumbprint,
    parse_uri,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("esx://esx.example.com/?no_verify=1", VsphereUri("esx", "esx.example.com", no_verify=True)),
        ("esx://esx.example.com", VsphereUri("esx", "esx.example.com")),
        ("esx://root@esx.example.com/", VsphereUri("esx", "esx.example.com", user="root")),
        ("ESX://root@10.0.0.5:8443/", VsphereUri("esx", "10.0.0.5", 8443, "root")),
        ("esx://[fd00::5]:902/", VsphereUri("esx", "fd00::5", 902)),
        ("esx://h/?no_verify=0", VsphereUri("esx", "h")),
        (
            "vpx://administrator%40vsphere.local@vc.example.com/Datacenter/esxi1?no_verify=1",
            VsphereUri(
                "vpx",
                "vc.example.com",
                user="administrator@vsphere.local",
                datacenter="Datacenter",
                host_system="esxi1",
                no_verify=True,
            ),
        ),
        (
            "vpx://admin@vc:4443/DC0/DC0_C0/DC0_C0_H0",
            VsphereUri("vpx", "vc", 4443, "admin", "DC0", "DC0_C0", "DC0_C0_H0"),
        ),
        (
            "vpx://admin@vc/My%20DC/Cluster%201/esx%2F1.lan/",
            VsphereUri(
                "vpx", "vc", user="admin", datacenter="My DC", cluster="Cluster 1", host_system="esx/1.lan"
            ),
        ),
    ],
)
def test_accepted(text: str, expected: VsphereUri) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("esx://h", "esx://h/"),
        ("esx://root@h:443/", "esx://root@h/"),
        ("ESX://h:8443/?no_verify=1", "esx://h:8443/?no_verify=1"),
        ("esx://[fd00::5]:902/", "esx://[fd00::5]:902/"),
        ("vpx://a%40b@vc/My%20DC/C/h", "vpx://a%40b@vc/My%20DC/C/h"),
    ],
)
def test_canonical_form_parses_back(text: str, canonical: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == canonical
    assert parse_uri(str(uri)) == uri


def test_login_defaults_to_root_for_esx_only() -> None:
    assert parse_uri("esx://h/").login == "root"
    assert parse_uri("esx://admin@h/").login == "admin"
    assert parse_uri("vpx://admin@vc/DC/h").login == "admin"
    assert parse_uri("esx://[::1]:9/").address == "[::1]:9"


@pytest.mark.parametrize(
    ("text", "part", "form"),
    [
        ("https://esx.example.com/sdk", "scheme", ESX_FORM),
        ("esx.example.com", "scheme", VPX_FORM),
        ("vi://h/", "scheme", ESX_FORM),
        ("esx:///", "host", ESX_FORM),
        ("esx://h:99999/", "host and port", ESX_FORM),
        ("esx://h:port/", "host and port", ESX_FORM),
        ("esx://h:0/", "port", ESX_FORM),
        ("esx://[fd00::5/", "host and port", ESX_FORM),
        ("esx://@h/", "user", ESX_FORM),
        ("esx://h/ha-datacenter", "path", ESX_FORM),
        ("esx://h/?no_verify=yes", "query", ESX_FORM),
        ("esx://h/?insecure=1", "query", ESX_FORM),
        ("esx://h/#frag", "fragment", ESX_FORM),
        ("vpx://vc/DC/h", "user", VPX_FORM),
        ("vpx://u@vc/DC", "path", VPX_FORM),
        ("vpx://u@vc/", "path", VPX_FORM),
        ("vpx://u@vc/A/B/C/D", "path", VPX_FORM),
    ],
)
def test_refused_naming_the_part_and_the_form(text: str, part: str, form: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        parse_uri(text)
    assert info.value.code is ErrorCode.INVALID_URI
    assert f": {part}: " in info.value.message
    assert info.value.hint is not None and form in info.value.hint


@pytest.mark.parametrize(
    "text",
    [
        "esx://root:Sup3rS3cret@esx.example.com/",
        "esx://root:Sup3rS3cret@esx.example.com:99999/",
        "esx://root:Sup/3rS3cret@esx.example.com/",
        "esx://root:Sup3r@S3cret@esx.example.com/?no_verify=1",
        "vpx://admin:Sup3rS3cret@vc/DC/h",
    ],
)
def test_a_password_in_the_uri_is_refused_and_never_repeated(text: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        parse_uri(text)
    err = info.value
    assert err.code is ErrorCode.INSECURE_CREDENTIALS
    assert "S3cret" not in err.describe() and "S3cret" not in repr(err.args)
    assert ":***@" in err.describe()
    assert "--password-file" in err.describe() and ".netrc" in err.describe()


@pytest.mark.parametrize("text", ["http://root:Sup3rS3cret@h/", "root:Sup3rS3cret@h"])
def test_a_password_in_a_wrong_uri_is_not_repeated_either(text: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        parse_uri(text)
    assert info.value.code is ErrorCode.INVALID_URI
    assert "S3cret" not in info.value.describe()


def test_thumbprints_are_normalised() -> None:
    digest = "ab" * 32
    expected = ":".join(["AB"] * 32)
    assert normalize_thumbprint(digest) == expected
    assert normalize_thumbprint(expected.lower()) == expected
    assert TlsPolicy(thumbprint=f" {digest} ").thumbprint == expected


@pytest.mark.parametrize("text", ["", "AB:CD", "ab" * 20, "zz" * 32, "ab" * 33])
def test_a_thumbprint_is_a_sha256_digest(text: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        normalize_thumbprint(text)
    assert info.value.code is ErrorCode.INVALID_OPTION
    assert "SHA-256" in info.value.message


def test_one_way_to_trust_a_server() -> None:
    with pytest.raises(Vm2kvmError) as info:
        TlsPolicy(ca_file="/etc/ca.pem", thumbprint="ab" * 32)
    assert info.value.code is ErrorCode.INVALID_OPTION
    with pytest.raises(Vm2kvmError):
        TlsPolicy(ca_file="/etc/ca.pem", no_verify=True)
