"""Reading VMware ``.vmx`` files into a flat, case-insensitive key/value map.

The VMX format is unspecified; what this parser accepts was learned from files
written by ESX(i), Workstation, Player and Fusion and from what other readers
(libvirt ``vmx.c``, virt-v2v ``parse_vmx.ml``) had to tolerate:

* ``key = "value"`` lines; ``#`` comments and blank lines; unquoted values are
  tolerated; keys are compared case-insensitively (messages use the spelling
  of the file); a key written twice keeps its last value, with a note.
* ``.encoding`` names the character set of the file (``windows-1252``,
  ``Shift_JIS``, ``UTF-8`` ...).  Without it the file must be UTF-8: VMware
  wrote such files in the host's locale, which we cannot know, so a byte that
  is not UTF-8 is an error naming the line's key rather than a silent guess.
  An ``.encoding`` Python does not know is a note when the file decodes as
  UTF-8 anyway (plain ASCII files are common) and an error otherwise.  A UTF-8
  byte order mark wins over ``.encoding``: it is added by the editor that last
  saved (and so re-encoded) the file.
* CRLF line ends, a UTF-8 BOM, a missing final newline are accepted.  A last
  line cut off inside its value (a copy that stopped early) is an error: the
  keys after it are lost and a VM built from the rest would be wrong.
* NUL bytes, VMDK files passed by mistake and files without a single
  ``key = value`` line are ``INVALID_SOURCE``.

Values are kept raw in ``VmxFile.entries``.  ``get_str`` decodes VMware's
``|XX`` escape (``|22`` is ``"``, ``|7C`` is ``|``, ``|0A`` a newline), which
VMware's config writer applies to every value; ``decode_escapes`` also decodes
``%XX``, which vSphere uses in ``displayName`` and ``annotation`` only.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vm2kvmd.core.hardware.model import Note
from vm2kvmd.errors import ErrorCode, Vm2kvmError

MAX_VMX_BYTES = 4 * 1024 * 1024  # real VMX files are a few KiB; this stops a wrong file early
_MAX_INT_CHARS = 24  # a signed 64-bit number has 20 characters; anything longer is nonsense

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:*\-\[\]/@+]+$")
_ENCODING_RE = re.compile(rb'^[ \t]*\.encoding[ \t]*=[ \t]*"?([^"\r\n#]*)"?', re.IGNORECASE | re.MULTILINE)
_PIPE_RE = re.compile(r"(?:\|[0-9A-Fa-f]{2})+")
_PERCENT_RE = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_VMDK_MAGIC = (b"KDMV", b"COWD", b"# Disk DescriptorFile")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class VmxFile:
    """A parsed VMX file.  Keys of ``entries`` are lower-case."""

    path: str  # absolute path, for messages
    entries: Mapping[str, str]  # lower-cased key -> raw value (last wins)
    notes: tuple[Note, ...] = ()  # tolerated problems (duplicate keys, bad lines, ...)
    spelling: Mapping[str, str] = field(default_factory=dict)  # lower-cased key -> key as written

    # --- typed accessors -----------------------------------------------------

    def key_name(self, key: str) -> str:
        """``key`` as the file spells it (for messages), else as given."""
        return self.spelling.get(key.lower(), key)

    def has(self, key: str) -> bool:
        return key.lower() in self.entries

    def get(self, key: str) -> str | None:
        """The raw value, or None when the key is absent."""
        return self.entries.get(key.lower())

    def get_str(self, key: str, default: str | None = None) -> str | None:
        """The value with ``|XX`` escapes decoded; ``default`` when absent."""
        raw = self.get(key)
        if raw is None:
            return default
        return decode_escapes(raw, percent=False)

    def get_bool(self, key: str, default: bool) -> bool:
        """TRUE/true/yes/on/1 and FALSE/false/no/off/0; empty means ``default``."""
        raw = self.get(key)
        if raw is None or not raw.strip():
            return default
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise self.invalid(key, raw, "is not a boolean", hint='use "TRUE" or "FALSE"')

    def get_int(
        self,
        key: str,
        default: int | None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        """A decimal (or ``0x`` hex) integer within ``[minimum, maximum]``; empty means ``default``."""
        raw = self.get(key)
        if raw is None or not raw.strip():
            return default
        value = parse_int(raw)
        if value is None:
            digits = raw.strip().lstrip("+-")
            if digits.isascii() and digits.isdigit():
                raise self.invalid(key, raw, "is far too large")
            raise self.invalid(key, raw, "is not a whole number")
        if minimum is not None and value < minimum:
            raise self.invalid(key, raw, f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.invalid(key, raw, f"must be at most {maximum}")
        return value

    def invalid(self, key: str, value: str, why: str, *, hint: str | None = None) -> Vm2kvmError:
        """The INVALID_VALUE error for ``key``, naming the file, the key as written and the value."""
        shown = value if len(value) <= 80 else value[:77] + "..."
        name = self.key_name(key)
        return Vm2kvmError(
            ErrorCode.INVALID_VALUE,
            f"{name} = {shown!r} {why}",
            file=self.path,
            key=name,
            value=shown,
            hint=hint or f"correct {name} in the VMX file",
        )

    # --- enumeration ---------------------------------------------------------

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Sub-keys of ``prefix.``: ``with_prefix("scsi0:1")`` -> ``{"present": "TRUE", ...}``."""
        head = prefix.lower() + "."
        return {k[len(head) :]: v for k, v in self.entries.items() if k.startswith(head)}

    def indices(self, stem: str) -> tuple[int, ...]:
        """Every N of ``stemN.*`` keys, sorted: ``indices("ethernet")`` -> ``(0, 1)``."""
        pattern = re.compile(re.escape(stem.lower()) + r"(\d{1,4})\.")
        found = {int(m[1]) for k in self.entries if (m := pattern.match(k))}
        return tuple(sorted(found))

    def unit_indices(self, stem: str) -> tuple[tuple[int, int], ...]:
        """Every (N, M) of ``stemN:M.*`` keys, sorted: ``unit_indices("scsi")`` -> ``((0, 0), (0, 8))``."""
        pattern = re.compile(re.escape(stem.lower()) + r"(\d{1,4}):(\d{1,4})\.")
        found = {(int(m[1]), int(m[2])) for k in self.entries if (m := pattern.match(k))}
        return tuple(sorted(found))


# --- value helpers ------------------------------------------------------------


def parse_int(text: str) -> int | None:
    """Decimal or ``0x`` hex integer, optionally signed; None when it is not one (or absurdly long)."""
    s = text.strip()
    if not s or len(s) > _MAX_INT_CHARS:
        return None
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    try:
        if s[:2].lower() == "0x" and len(s) > 2:
            return sign * int(s[2:], 16)
        if s.isascii() and s.isdigit():
            return sign * int(s, 10)
    except ValueError:
        return None
    return None


def pci_slot(vmx: VmxFile, key: str) -> int | None:
    """A ``*.pciSlotNumber``; None when absent or -1 (VMware's "not assigned yet")."""
    slot = vmx.get_int(key, None, minimum=-1, maximum=65535)
    return None if slot is None or slot < 0 else slot


def _decode_hex_run(run: str) -> str:
    """Bytes written as ``|XX|YY`` or ``%XX%YY``; UTF-8 when they form it, else one char per byte."""
    data = bytes(int(run[i + 1 : i + 3], 16) for i in range(0, len(run), 3))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_escapes(value: str, *, percent: bool = True) -> str:
    """Decode VMware's ``|XX`` escapes and (``percent``) vSphere's ``%XX`` escapes.

    ``|22`` -> ``"``, ``|0A`` -> newline, ``|7C`` -> ``|``, ``%2f`` -> ``/``.
    A ``|`` or ``%`` not followed by two hex digits is kept as written, as
    VMware's own reader does.
    """
    out = _PIPE_RE.sub(lambda m: _decode_hex_run(m[0]), value)
    if percent:
        out = _PERCENT_RE.sub(lambda m: _decode_hex_run(m[0]), out)
    return out


# --- parsing --------------------------------------------------------------------


_PASS_VMX = "pass the .vmx file of the VM"


def invalid_source(path: str, message: str, *, hint: str = _PASS_VMX, key: str | None = None) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.INVALID_SOURCE, message, file=path, key=key, hint=hint)


def _choose_codec(data: bytes, path: str, notes: list[Note]) -> tuple[str, str | None]:
    """(Python codec name, the ``.encoding`` value as written or None)."""
    declared: str | None = None
    has_bom = data.startswith(_BOM)
    for match in _ENCODING_RE.finditer(data[len(_BOM) :] if has_bom else data):
        declared = match[1].decode("ascii", "replace").strip()
    if has_bom:
        if declared and _lookup(declared) not in ("utf-8", None):
            notes.append(
                Note(
                    f"file starts with a UTF-8 byte order mark but declares {declared!r}; "
                    "read as UTF-8 (an editor re-encoded it)",
                    ".encoding",
                )
            )
        return "utf-8", declared
    if declared is None or not declared:
        return "utf-8", declared
    codec = _lookup(declared)
    if codec is not None:
        return codec, declared
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise Vm2kvmError(
            ErrorCode.INVALID_VALUE,
            f"unknown character encoding {declared!r} and the file is not UTF-8",
            file=path,
            key=".encoding",
            value=declared,
            hint='convert the file to UTF-8 and set .encoding = "UTF-8"',
        ) from None
    notes.append(
        Note(f"unknown character encoding {declared!r}; the file is valid UTF-8, read as such", ".encoding")
    )
    return "utf-8", declared


def _lookup(name: str) -> str | None:
    """The Python codec for a VMX ``.encoding`` value, if it is an ASCII-compatible text encoding."""
    try:
        info = codecs.lookup(name)
        # Keys are ASCII and the parser splits on ASCII; UTF-16 or a bytes-to-bytes
        # codec (base64, rot13 are codec names too) cannot describe a VMX file.
        if b"key = 1".decode(info.name) != "key = 1" or "key".encode(info.name) != b"key":
            return None
    except (LookupError, UnicodeError, TypeError, ValueError):
        return None
    return info.name


def _key_of(raw_line: bytes) -> str | None:
    """The key of a line we cannot decode, for the error message."""
    head, sep, _ = raw_line.partition(b"=")
    head = head.lstrip(_BOM)
    if not sep:
        return None
    key = head.strip().decode("ascii", "replace")
    return key if _KEY_RE.match(key) else None


def _split_value(rest: str) -> tuple[str, bool, str]:
    """(value, closed, trailing text) of the part after ``=``."""
    rest = rest.strip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            return rest[1:], False, ""
        return rest[1:end], True, rest[end + 1 :].strip()
    # Unquoted (hand-written and some tools' files): a comment needs a blank before '#'.
    value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
    return value, True, ""


def parse_vmx(data: bytes, path: str) -> VmxFile:
    """Parse the bytes of a VMX file; ``path`` is used in messages only.

    Raises ``Vm2kvmError``: INVALID_SOURCE for something that is not a VMX
    file (empty, binary, a VMDK, too large, truncated, undecodable bytes),
    INVALID_VALUE for an unusable ``.encoding``.
    """
    if len(data) > MAX_VMX_BYTES:
        raise invalid_source(
            path,
            f"file is {len(data)} bytes, more than the {MAX_VMX_BYTES} a VMX file can have",
        )
    if not data.strip(_BOM + b" \t\r\n"):
        raise invalid_source(path, "file is empty")
    if data.startswith(_VMDK_MAGIC):
        raise invalid_source(path, "this is a VMDK disk, not a VMX file")
    if b"\x00" in data:
        first_nul = data.index(b"\x00")
        raise invalid_source(
            path,
            f"file contains NUL bytes (first at byte {first_nul}); it is not a text VMX file",
        )

    notes: list[Note] = []
    codec, declared = _choose_codec(data, path, notes)
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    raw_lines = body.split(b"\n")
    ends_with_newline = body.endswith(b"\n")
    if ends_with_newline:
        raw_lines.pop()

    entries: dict[str, str] = {}
    spelling: dict[str, str] = {}
    first_line: dict[str, int] = {}
    seen_count: dict[str, int] = {}
    bad_lines = 0
    for number, raw in enumerate(raw_lines, start=1):
        is_last = number == len(raw_lines) and not ends_with_newline
        try:
            line = raw.decode(codec).rstrip("\r").strip()
        except UnicodeDecodeError as err:
            key = _key_of(raw)
            text = raw.decode(codec, "backslashreplace").strip()
            shown = text.partition("=")[2].strip().strip('"') if key else text
            where = "the declared" if declared else "no"
            raise Vm2kvmError(
                ErrorCode.INVALID_SOURCE,
                f"line {number} is not valid {codec} text (byte {err.start}): {_shorten(text, 100)}",
                file=path,
                key=key,
                value=shown,
                hint=f"the file has {where} .encoding; add or fix .encoding "
                '(e.g. .encoding = "windows-1252") or convert the file to UTF-8',
            ) from None
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep:
            if is_last:
                raise _truncated(path, number, key if _KEY_RE.match(key) else None)
            bad_lines += 1
            notes.append(Note(f"line {number} ignored: not a key = value line: {_shorten(line)!r}"))
            continue
        if not _KEY_RE.match(key) or any(ord(c) < 0x20 or c == "\x7f" for c in rest.replace("\t", " ")):
            bad_lines += 1
            notes.append(Note(f"line {number} ignored: bad key or control characters: {_shorten(line)!r}"))
            continue
        value, closed, trailing = _split_value(rest)
        if not closed:
            if is_last:
                raise _truncated(path, number, key)
            bad_lines += 1
            notes.append(Note(f"line {number} ignored: value has no closing quote", key))
            continue
        if trailing and not trailing.startswith("#"):
            extra = _shorten(trailing)
            notes.append(Note(f"line {number}: text after the closing quote ignored: {extra!r}", key))
        lower = key.lower()
        if lower in entries:
            seen_count[lower] += 1
        else:
            seen_count[lower] = 1
            first_line[lower] = number
        entries[lower] = value
        spelling[lower] = key

    if not entries:
        raise invalid_source(path, "no key = value lines found; this is not a VMX file")
    if bad_lines > len(entries):
        raise invalid_source(
            path,
            f"{bad_lines} of {bad_lines + len(entries)} lines are not key = value lines; not a VMX file",
        )
    for lower, count in seen_count.items():
        if count > 1:
            notes.append(
                Note(
                    f"key appears {count} times (first on line {first_line[lower]}); "
                    f"the last value {entries[lower]!r} is used",
                    spelling[lower],
                )
            )
    return VmxFile(
        path=path,
        entries=MappingProxyType(entries),
        notes=tuple(notes),
        spelling=MappingProxyType(spelling),
    )


def _truncated(path: str, number: int, key: str | None) -> Vm2kvmError:
    return invalid_source(
        path,
        f"file ends in the middle of line {number}; it looks truncated",
        key=key,
        hint="copy the VMX file again from the VMware host",
    )


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
