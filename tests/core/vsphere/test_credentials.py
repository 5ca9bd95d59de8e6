"""~/.netrc as the field guide uses it: which entry applies to a host, and the 0600 rule."""

from __future__ import annotations

import stat

import pytest

from vm2kvmd.core.vsphere.credentials import NetrcEntry, check_netrc_mode, netrc_entry, parse_netrc
from vm2kvmd.errors import ErrorCode, Vm2kvmError

NETRC = """\
# ESXi hosts of the lab
machine esx1.lab login root password Esx1Pass
machine esx2.lab
    login root
    password "with space and \\"quote\\""

macdef init
machine inside-a-macro login evil password MacroPass

machine vc.lab login administrator@vsphere.local password VcPass account ignored
machine vc.lab login other password OtherPass
default login anonymous password DefaultPass
"""


def test_entries_in_order_with_macros_skipped() -> None:
    entries = parse_netrc(NETRC)
    assert [(e.machine, e.login) for e in entries] == [
        ("esx1.lab", "root"),
        ("esx2.lab", "root"),
        ("vc.lab", "administrator@vsphere.local"),
        ("vc.lab", "other"),
        (None, "anonymous"),
    ]
    assert entries[1].password == 'with space and "quote"'


@pytest.mark.parametrize(
    ("host", "login", "password"),
    [
        ("esx1.lab", None, "Esx1Pass"),
        ("esx1.lab", "root", "Esx1Pass"),
        ("vc.lab", "other", "OtherPass"),
        ("vc.lab", "administrator@vsphere.local", "VcPass"),
        ("vc.lab", None, "VcPass"),
        ("unknown.lab", None, "DefaultPass"),
        ("unknown.lab", "anonymous", "DefaultPass"),
        ("inside-a-macro", None, "DefaultPass"),
    ],
)
def test_entry_for_a_host(host: str, login: str | None, password: str) -> None:
    entry = netrc_entry(parse_netrc(NETRC), host, login)
    assert entry is not None and entry.password == password


def test_no_entry() -> None:
    entries = parse_netrc("machine a login root password x\n")
    assert netrc_entry(entries, "b", None) is None
    assert netrc_entry(entries, "a", "admin") is None
    assert netrc_entry(parse_netrc(""), "a", None) is None


def test_password_not_in_repr() -> None:
    (entry,) = parse_netrc("machine a login root password TopSecret1\n")
    assert "TopSecret1" not in repr(entry)
    assert entry == NetrcEntry("a", "root", "TopSecret1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("login root password x\n", "line 1: 'login' before any 'machine'"),
        ("machine a login root password\n", "line 1: 'password' without a value"),
        ('machine a password "TopSecret1\n', "line 1: unterminated quote"),
        ("machine a login root TopSecret1\n", "line 1: unexpected word"),
    ],
)
def test_malformed_files_are_refused_without_their_secrets(text: str, problem: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        parse_netrc(text, file="/home/u/.netrc")
    assert info.value.code is ErrorCode.INVALID_VALUE
    assert info.value.file == "/home/u/.netrc"
    assert problem in info.value.message
    assert "TopSecret1" not in info.value.describe()


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_modes_pass(mode: int) -> None:
    check_netrc_mode(stat.S_IFREG | mode, file="/home/u/.netrc", owner=1000, caller=1000)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o666])
def test_modes_others_can_use_are_refused(mode: int) -> None:
    with pytest.raises(Vm2kvmError) as info:
        check_netrc_mode(stat.S_IFREG | mode, file="/home/u/.netrc", owner=1000, caller=1000)
    assert info.value.code is ErrorCode.INSECURE_CREDENTIALS
    assert f"mode {mode:04o}" in info.value.message
    assert info.value.hint == "chmod 600 /home/u/.netrc"


def test_a_file_of_another_user_is_refused() -> None:
    with pytest.raises(Vm2kvmError) as info:
        check_netrc_mode(stat.S_IFREG | 0o600, file="/home/v/.netrc", owner=1001, caller=1000)
    assert info.value.code is ErrorCode.INSECURE_CREDENTIALS
