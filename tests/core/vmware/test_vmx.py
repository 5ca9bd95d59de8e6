"""The VMX parser: syntax, encodings, escapes, typed accessors and rejected files (reading: tests/sources)."""

from __future__ import annotations

import pytest

from vm2kvmd.core.vmware.vmx import MAX_VMX_BYTES, VmxFile, decode_escapes, parse_int, parse_vmx
from vm2kvmd.errors import ErrorCode, Vm2kvmError

PATH = "/vms/web01/web01.vmx"


def parse(text: str | bytes) -> VmxFile:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_vmx(data, PATH)


def parse_error(data: bytes) -> Vm2kvmError:
    with pytest.raises(Vm2kvmError) as info:
        parse_vmx(data, PATH)
    return info.value


# --- syntax -------------------------------------------------------------------------


def test_quoted_unquoted_comments_and_blank_lines() -> None:
    vmx = parse(
        "#!/usr/bin/vmware\n"
        "# a comment\n"
        "\n"
        '.encoding = "UTF-8"\n'
        'displayName = "web 01"   # trailing comment\n'
        "numvcpus = 2\n"
        '   memsize   =   "1024"\n'
        'annotation = ""\n'
    )
    assert vmx.get("displayName") == "web 01"
    assert vmx.get("numvcpus") == "2"
    assert vmx.get("memsize") == "1024"
    assert vmx.get("annotation") == ""
    assert vmx.get("missing") is None
    assert vmx.notes == ()


def test_keys_are_case_insensitive_and_keep_their_spelling() -> None:
    vmx = parse('memSize = "2048"\nScsi0:0.FileName = "a.vmdk"\n')
    assert vmx.get("memsize") == vmx.get("MEMSIZE") == "2048"
    assert vmx.entries == {"memsize": "2048", "scsi0:0.filename": "a.vmdk"}
    assert vmx.key_name("scsi0:0.fileName") == "Scsi0:0.FileName"
    with pytest.raises(Vm2kvmError) as info:
        vmx.get_int("memsize", None, maximum=1024)
    assert info.value.key == "memSize"


def test_duplicate_keys_last_wins_with_a_note() -> None:
    vmx = parse('memsize = "1024"\nnumvcpus = "1"\nMEMSIZE = "4096"\n')
    assert vmx.get("memsize") == "4096"
    (note,) = vmx.notes
    assert note.key == "MEMSIZE"
    assert "2 times" in note.message and "'4096'" in note.message and "line 1" in note.message


def test_bad_lines_and_trailing_text_are_notes() -> None:
    vmx = parse(
        'displayName = "a"\n'
        "just some words\n"
        'guestOS = "other" junk\n'
        'broken = "no end\n'
        'memsize = "64"\n'
        "bad key = 1\n"
    )
    assert vmx.get("guestOS") == "other"
    assert vmx.get("memsize") == "64"
    assert not vmx.has("broken")
    messages = [str(n) for n in vmx.notes]
    assert any("line 2 ignored" in m and "just some words" in m for m in messages)
    assert any(m.startswith("guestOS: line 3: text after the closing quote") for m in messages)
    assert any(m.startswith("broken: line 4 ignored: value has no closing quote") for m in messages)
    assert any("line 6 ignored" in m for m in messages)


def test_wildcard_and_unknown_keys_are_kept() -> None:
    vmx = parse('pciPassthru*.present = "FALSE"\nfoo.bar.baz = "1"\n')
    assert vmx.get("pcipassthru*.present") == "FALSE"
    assert vmx.get("foo.bar.baz") == "1"


def test_crlf_bom_and_no_final_newline() -> None:
    vmx = parse(b'\xef\xbb\xbfdisplayName = "x"\r\nmemsize = "512"\r\nnumvcpus = "2"')
    assert vmx.entries == {"displayname": "x", "memsize": "512", "numvcpus": "2"}


# --- encodings ------------------------------------------------------------------------


def test_windows_1252_encoding() -> None:
    vmx = parse(b'.encoding = "windows-1252"\ndisplayName = "Caf\xe9 \x80"\n')
    assert vmx.get("displayName") == "Café €"


def test_shift_jis_encoding() -> None:
    name = "試験サーバ"
    vmx = parse(b'.encoding = "Shift_JIS"\ndisplayName = "' + name.encode("shift_jis") + b'"\n')
    assert vmx.get("displayName") == name


def test_utf8_is_the_default() -> None:
    vmx = parse('displayName = "Ünïcødé"\n')
    assert vmx.get("displayName") == "Ünïcødé"


def test_bom_wins_over_a_declared_encoding() -> None:
    vmx = parse(b'\xef\xbb\xbf.encoding = "windows-1252"\ndisplayName = "\xc3\xa9"\n')
    assert vmx.get("displayName") == "é"
    assert any(n.key == ".encoding" and "byte order mark" in n.message for n in vmx.notes)


def test_unknown_encoding_on_an_ascii_file_is_a_note() -> None:
    vmx = parse('.encoding = "klingon-8"\ndisplayName = "plain"\n')
    assert vmx.get("displayName") == "plain"
    (note,) = vmx.notes
    assert note.key == ".encoding" and "klingon-8" in note.message


def test_bytes_codecs_are_not_text_encodings() -> None:
    # "base64" is a Python codec name, but not a character set.
    err = parse_error(b'.encoding = "base64"\ndisplayName = "\xe9"\n')
    assert err.code is ErrorCode.INVALID_VALUE
    assert err.key == ".encoding" and err.value == "base64"


# --- escapes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("say |22hi|22", 'say "hi"'),
        ("line1|0Aline2", "line1\nline2"),
        ("a |7C b", "a | b"),
        ("100%25 sure", "100% sure"),
        ("dir%2fname%5Cx", "dir/name\\x"),
        ("caf|C3|A9", "café"),
        ("keep |ZZ and %G1 and trailing |", "keep |ZZ and %G1 and trailing |"),
        ("latin |E9", "latin é"),
    ],
)
def test_decode_escapes(raw: str, decoded: str) -> None:
    assert decode_escapes(raw) == decoded


def test_get_str_decodes_pipe_escapes_only() -> None:
    vmx = parse('ethernet0.networkName = "DMZ |22A|22 50%25"\n')
    assert vmx.get("ethernet0.networkName") == "DMZ |22A|22 50%25"
    assert vmx.get_str("ethernet0.networkName") == 'DMZ "A" 50%25'
    assert vmx.get_str("nothing", "dflt") == "dflt"


# --- typed accessors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        *[("TRUE", True), ("true", True), ("True", True), ("yes", True), ("1", True), ("on", True)],
        *[("FALSE", False), ("false", False), ("no", False), ("0", False), ("Off", False)],
    ],
)
def test_get_bool(raw: str, value: bool) -> None:
    assert parse(f'flag = "{raw}"\n').get_bool("flag", not value) is value


def test_get_bool_default_and_error() -> None:
    vmx = parse('empty = ""\nodd = "maybe"\n')
    assert vmx.get_bool("empty", True) is True
    assert vmx.get_bool("absent", False) is False
    with pytest.raises(Vm2kvmError) as info:
        vmx.get_bool("odd", False)
    err = info.value
    assert (err.code, err.file, err.key, err.value) == (ErrorCode.INVALID_VALUE, PATH, "odd", "maybe")
    assert "not a boolean" in err.describe() and PATH in err.describe()


def test_get_int() -> None:
    vmx = parse('a = "42"\nb = "-7"\nc = "0x1F"\nd = " 8 "\n')
    assert vmx.get_int("a", None) == 42
    assert vmx.get_int("b", None) == -7
    assert vmx.get_int("c", None) == 31
    assert vmx.get_int("d", None, minimum=8, maximum=8) == 8
    assert vmx.get_int("absent", 5) == 5


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("12abc", "not a whole number"),
        ("1.5", "not a whole number"),
        ("١٢", "not a whole number"),  # Unicode digits are not VMX numbers
        ("9" * 30, "far too large"),
        ("-" + "9" * 30, "far too large"),
        ("0", "at least 1"),
        ("100000", "at most 1000"),
    ],
)
def test_get_int_errors(raw: str, why: str) -> None:
    vmx = parse(f'numvcpus = "{raw}"\n')
    with pytest.raises(Vm2kvmError) as info:
        vmx.get_int("numvcpus", 1, minimum=1, maximum=1000)
    assert info.value.code is ErrorCode.INVALID_VALUE
    assert info.value.key == "numvcpus" and info.value.value == raw
    assert why in info.value.message


def test_parse_int_limits() -> None:
    assert parse_int(str(2**64)) == 2**64
    assert parse_int("-" + "9" * 40) is None
    assert parse_int("") is None and parse_int("-") is None and parse_int("0x") is None


def test_enumeration_helpers() -> None:
    vmx = parse(
        'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:12.fileName = "b.vmdk"\n'
        'scsi1:3.present = "TRUE"\nethernet0.present = "TRUE"\nethernet3.present = "TRUE"\n'
        'ethernet.foo = "x"\n'
    )
    assert vmx.indices("ethernet") == (0, 3)
    assert vmx.indices("scsi") == (0,)
    assert vmx.unit_indices("scsi") == ((0, 0), (0, 12), (1, 3))
    assert vmx.with_prefix("scsi0:12") == {"filename": "b.vmdk"}


# --- rejected input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", ErrorCode.INVALID_SOURCE, "empty"),
        (b"\xef\xbb\xbf \r\n\n", ErrorCode.INVALID_SOURCE, "empty"),
        (b"# only a comment\n\n", ErrorCode.INVALID_SOURCE, "no key = value"),
        (b'displayName = "x"\nmemsize = "20', ErrorCode.INVALID_SOURCE, "truncated"),
        (b'displayName = "x"\nethernet0.genera', ErrorCode.INVALID_SOURCE, "truncated"),
        (b'displayName = "a"\x00\x00\x00\x01', ErrorCode.INVALID_SOURCE, "NUL bytes"),
        (bytes(range(1, 256)) * 4, ErrorCode.INVALID_SOURCE, "not valid utf-8"),
        (b"lorem ipsum\ndolor sit\namet = 1\nconsectetur\n", ErrorCode.INVALID_SOURCE, "not a VMX file"),
        (b"KDMV\x01\x00\x00\x00", ErrorCode.INVALID_SOURCE, "VMDK"),
        (b"# Disk DescriptorFile\nversion=1\n", ErrorCode.INVALID_SOURCE, "VMDK"),
        (b'displayName = "caf\xe9"\n', ErrorCode.INVALID_SOURCE, "not valid utf-8"),
        (b'.encoding = "klingon-8"\ndisplayName = "caf\xe9"\n', ErrorCode.INVALID_VALUE, "klingon-8"),
    ],
    ids=[
        "empty",
        "only-whitespace",
        "only-comments",
        "truncated-in-value",
        "truncated-in-key",
        "nul-bytes",
        "binary-garbage",
        "prose",
        "sparse-vmdk",
        "vmdk-descriptor",
        "non-utf8-without-encoding",
        "unknown-encoding",
    ],
)
def test_rejected_bytes(data: bytes, code: ErrorCode, words: str) -> None:
    err = parse_error(data)
    assert err.code is code
    assert err.file == PATH
    assert words in err.describe()
    assert PATH in err.describe()


def test_truncated_error_names_the_key() -> None:
    err = parse_error(b'displayName = "x"\nmemsize = "20')
    assert err.key == "memsize"
    assert "line 2" in err.message


def test_non_utf8_file_name_names_key_and_value() -> None:
    err = parse_error(b'displayName = "x"\nscsi0:0.fileName = "d\xefsk.vmdk"\n')
    assert err.code is ErrorCode.INVALID_SOURCE
    assert err.key == "scsi0:0.fileName"
    assert err.value == "d\\xefsk.vmdk"
    assert ".encoding" in (err.hint or "")


def test_parse_rejects_more_than_the_limit() -> None:
    err = parse_error(b"a = 1\n" * (MAX_VMX_BYTES // 6 + 1))
    assert err.code is ErrorCode.INVALID_SOURCE
    assert str(MAX_VMX_BYTES) in err.message
