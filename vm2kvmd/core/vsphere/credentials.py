"""Credentials for a vSphere host from a ``~/.netrc`` text, and the rule for that file's mode.

The field guide keeps the ESXi password in a 0600 ``~/.netrc``, as virt-v2v (libvirt's auth) and
curl read it.  The CLI reads and stats the file; here are only the rules: which entry applies to
a host and user, and that a file other users can read or write is refused (as ftp and curl's
netrc code refuse it), before its password is used.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from vm2kvmd.errors import ErrorCode, Vm2kvmError


@dataclass(frozen=True)
class NetrcEntry:
    """One ``machine`` (or the ``default``) entry; the password never shows in ``repr``."""

    machine: str | None  # None: the ``default`` entry
    login: str | None
    password: str | None = field(default=None, repr=False)


def check_netrc_mode(mode: int, *, file: str, owner: int, caller: int) -> None:
    """Refuse a netrc file that is not the caller's own or that others can read or write.

    ``mode`` is ``st_mode`` (type bits allowed): 0600 and 0400 pass, anything with group or
    other bits does not.
    """
    if owner != caller:
        raise Vm2kvmError(
            ErrorCode.INSECURE_CREDENTIALS,
            f"the file belongs to user id {owner}, not to the caller ({caller}); its passwords are not used",
            file=file,
            hint="use your own ~/.netrc or --password-file",
        )
    if stat.S_IMODE(mode) & 0o077:
        raise Vm2kvmError(
            ErrorCode.INSECURE_CREDENTIALS,
            f"mode {stat.S_IMODE(mode):04o} lets other users read or change it; its passwords are not used",
            file=file,
            hint=f"chmod 600 {file}",
        )


def parse_netrc(text: str, *, file: str = "~/.netrc") -> list[NetrcEntry]:
    """The entries of a netrc text, in order; ``macdef`` bodies are skipped.

    Tokens are separated by white space; a token may be double-quoted with backslash escapes
    (as Python's ``netrc`` and curl accept) so a password can hold spaces.
    """
    entries: list[NetrcEntry] = []
    tokens = _Tokens(text, file)
    current: dict[str, str | None] | None = None
    for token, line in tokens:
        if token in ("machine", "default"):
            if current is not None:
                entries.append(NetrcEntry(current["machine"], current["login"], current["password"]))
            machine = None if token == "default" else _value(tokens, token, line, file)
            current = {"machine": machine, "login": None, "password": None}
        elif token in ("login", "password", "account"):
            value = _value(tokens, token, line, file)
            if current is None:
                raise Vm2kvmError(
                    ErrorCode.INVALID_VALUE,
                    f"line {line}: {token!r} before any 'machine' or 'default'",
                    file=file,
                )
            if token != "account":
                current[token] = value
        elif token == "macdef":
            _value(tokens, token, line, file)
            tokens.skip_to_blank_line()  # the body runs to the next blank line
        else:
            # Never show the token itself: an unknown word is most likely a misplaced password.
            raise Vm2kvmError(
                ErrorCode.INVALID_VALUE,
                f"line {line}: unexpected word "
                "(expected machine, default, login, password, account or macdef)",
                file=file,
            )
    if current is not None:
        entries.append(NetrcEntry(current["machine"], current["login"], current["password"]))
    return entries


def netrc_entry(entries: list[NetrcEntry], host: str, login: str | None) -> NetrcEntry | None:
    """The entry for ``host`` (and ``login`` when one is asked for), else ``default``, else None.

    As curl does: the first ``machine HOST`` whose login matches (or has none) wins; ``default``
    applies to any host.
    """
    for candidate in [e for e in entries if e.machine == host] + [e for e in entries if e.machine is None]:
        if login is None or candidate.login in (None, login):
            return candidate
    return None


class _Tokens:
    """Tokens with their line numbers; ``macdef`` bodies are consumed by lines, not tokens."""

    def __init__(self, text: str, file: str) -> None:
        self._lines = text.splitlines()
        self._file = file
        self._row = 0
        self._pending: list[str] = []

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return self

    def __next__(self) -> tuple[str, int]:
        while not self._pending:
            if self._row >= len(self._lines):
                raise StopIteration
            self._pending = _split(self._lines[self._row], self._row + 1, self._file)
            self._row += 1
        return self._pending.pop(0), self._row

    def skip_to_blank_line(self) -> None:
        self._pending = []
        while self._row < len(self._lines) and self._lines[self._row].strip():
            self._row += 1


def _value(tokens: _Tokens, keyword: str, line: int, file: str) -> str:
    try:
        value, _ = next(tokens)
    except StopIteration:
        raise Vm2kvmError(
            ErrorCode.INVALID_VALUE, f"line {line}: {keyword!r} without a value", file=file
        ) from None
    return value


def _split(line: str, number: int, file: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch.isspace():
            i += 1
        elif ch == "#" and not out:
            break  # a comment line (Python's netrc treats '#' at a line start this way)
        elif ch == '"':
            i += 1
            buf = []
            while i < len(line) and line[i] != '"':
                if line[i] == "\\" and i + 1 < len(line):
                    i += 1
                buf.append(line[i])
                i += 1
            if i >= len(line):
                raise Vm2kvmError(ErrorCode.INVALID_VALUE, f"line {number}: unterminated quote", file=file)
            out.append("".join(buf))
            i += 1
        else:
            start = i
            while i < len(line) and not line[i].isspace():
                i += 1
            out.append(line[start:i])
    return out
