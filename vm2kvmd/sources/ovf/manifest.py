"""OVF manifests (``.mf``): one ``SHA256(name)= hex`` line per file of the package.

``parse_manifest`` is pure.  ``verify_manifest`` streams every listed file
through its hash (blocking, 1 MiB at a time, stoppable between chunks); it
runs once per migration job, before the first byte is converted, and never
during ``Inspect`` or the ``Migrate`` preflight, which must answer quickly
(hashing a 40 GiB appliance takes minutes).

ovftool writes SHA1 (``--shaAlgorithm=SHA1``, the old default), SHA256 (the
default since ovftool 4.2) or SHA512; vSphere's exporter SHA256.  Lines of
other algorithms (MD5 from old tools) cannot prove anything and make the
manifest unusable, as does a line that is not understood: a manifest is
either checked completely or the migration stops.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.ovf.files import Located, hash_range

MAX_MANIFEST_BYTES = 1 << 20
_LINE_RE = re.compile(r"^(?P<algo>[A-Za-z0-9-]+)\s*\((?P<name>.+)\)\s*=\s*(?P<hex>[0-9A-Fa-f]+)$")
_DIGEST_CHARS = {"sha1": 40, "sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class ManifestEntry:
    algorithm: str  # hashlib name: sha1, sha256, sha512
    name: str  # the file, as the package names it
    digest: str  # lower-case hex
    line: int


def _invalid(path: str, message: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_SOURCE,
        message,
        file=path,
        hint="the manifest is damaged; export the VM again, or remove the .mf to migrate without a check",
    )


def parse_manifest(data: bytes, path: str) -> tuple[ManifestEntry, ...]:
    """Every line of a manifest; INVALID_SOURCE naming the line for anything else."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _invalid(path, "the manifest is not UTF-8 text") from None
    entries: list[ManifestEntry] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise _invalid(path, f"line {number} is not 'SHA256(file)= digest': {line[:80]!r}")
        algorithm = match["algo"].lower().replace("-", "")
        if algorithm not in _DIGEST_CHARS:
            raise _invalid(
                path, f"line {number} uses {match['algo']}; only SHA1, SHA256 and SHA512 are checked"
            )
        digest = match["hex"].lower()
        if len(digest) != _DIGEST_CHARS[algorithm]:
            raise _invalid(
                path,
                f"line {number}: a {match['algo']} digest has {_DIGEST_CHARS[algorithm]} "
                f"hex digits, not {len(digest)}",
            )
        name = match["name"].strip()
        if name in names:
            raise _invalid(path, f"line {number} lists {name!r} a second time")
        names.add(name)
        entries.append(ManifestEntry(algorithm, name, digest, number))
    if not entries:
        raise _invalid(path, "the manifest lists no file")
    return tuple(entries)


Locate = Callable[[str], Located | None]  # a name of the package -> its bytes, None when absent


def check_listed(entries: tuple[ManifestEntry, ...], locate: Locate, manifest: str) -> list[Located]:
    """Where every listed file is; MANIFEST_MISMATCH for one the package does not contain."""
    found: list[Located] = []
    for entry in entries:
        loc = locate(entry.name)
        if loc is None:
            raise Vm2kvmError(
                ErrorCode.MANIFEST_MISMATCH,
                f"the manifest lists {entry.name!r} (line {entry.line}), which the package does not contain",
                file=manifest,
                value=entry.name,
                hint="the package is incomplete or was changed after export; copy it again",
            )
        found.append(loc)
    return found


def verify_manifest(
    entries: tuple[ManifestEntry, ...],
    locate: Locate,
    manifest: str,
    stop: threading.Event,
    log: Callable[[str], None],
) -> None:
    """Hash every listed file and compare; MANIFEST_MISMATCH naming the first that differs.

    Checks that all listed files exist before hashing any, so a missing one
    fails at once.  ``log`` is told about each file checked (from this thread).
    """
    located = check_listed(entries, locate, manifest)
    for entry, loc in zip(entries, located, strict=True):
        actual = hash_range(loc, entry.algorithm, stop)
        if actual != entry.digest:
            raise Vm2kvmError(
                ErrorCode.MANIFEST_MISMATCH,
                f"{entry.algorithm.upper()} of {entry.name!r} is {actual}, the manifest (line {entry.line}) "
                f"says {entry.digest}",
                file=manifest,
                value=entry.name,
                hint="the package was damaged or changed after export; copy it again from its source",
            )
        log(f"manifest: {entry.name} ({loc.size} bytes) matches its {entry.algorithm.upper()}")
