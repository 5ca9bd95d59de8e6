"""vSphere source URIs as virt-v2v spells them, and how their TLS is checked.

``esx://[USER@]HOST[:PORT]/[?no_verify=1]`` is a standalone ESXi;
``vpx://USER@VCENTER/DATACENTER[/CLUSTER]/HOST[?no_verify=1]`` is a host managed by vCenter.
Every refusal names the part of the URI that is wrong and the form we expect.  A password in the
URI (``user:secret@``) is refused and never repeated: URIs end up in shell history, ``ps`` and
job stores, so credentials come from ``~/.netrc``, ``--password-file`` or a prompt instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from vm2kvmd.errors import ErrorCode, Vm2kvmError

ESX_FORM = "esx://[USER@]HOST[:PORT]/[?no_verify=1]"
VPX_FORM = "vpx://USER@VCENTER/DATACENTER[/CLUSTER]/HOST[?no_verify=1]"
DEFAULT_PORT = 443
ESX_DEFAULT_USER = "root"  # as virt-v2v and libvirt's esx driver assume
_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class VsphereUri:
    """A parsed source URI; ``str()`` gives it back in canonical form."""

    scheme: str  # "esx" or "vpx"
    host: str  # the ESXi host (esx) or the vCenter (vpx)
    port: int = DEFAULT_PORT
    user: str | None = None
    datacenter: str | None = None  # vpx only
    cluster: str | None = None  # vpx only, when the host is in a cluster
    host_system: str | None = None  # vpx only: the ESXi host as vCenter names it
    no_verify: bool = False

    @property
    def login(self) -> str:
        """The user name to log in with (``root`` for an ESXi URI without one)."""
        return self.user or ESX_DEFAULT_USER

    @property
    def address(self) -> str:
        """``HOST:PORT`` as messages show it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        user = f"{_quote(self.user)}@" if self.user else ""
        port = "" if self.port == DEFAULT_PORT else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = "/" + "/".join(
            _quote(p) for p in (self.datacenter, self.cluster, self.host_system) if p is not None
        )
        query = "?no_verify=1" if self.no_verify else ""
        return f"{self.scheme}://{user}{host}{port}{path}{query}"


def _quote(part: str) -> str:
    return quote(part, safe="")


def _bad(uri: str, part: str, problem: str, form: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_URI, f"source URI {uri!r}: {part}: {problem}", hint=f"expected {form}"
    )


def parse_uri(text: str) -> VsphereUri:
    """``text`` as a ``VsphereUri``, or ``Vm2kvmError(INVALID_URI)`` naming the wrong part."""
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("esx", "vpx"):
        raise _bad(
            _redacted(raw),
            "scheme",
            "a vSphere source starts with esx:// or vpx://",
            f"{ESX_FORM} or {VPX_FORM}",
        )
    form = ESX_FORM if scheme == "esx" else VPX_FORM
    if ":" in _userinfo(rest):
        raise Vm2kvmError(
            ErrorCode.INSECURE_CREDENTIALS,
            f"source URI {_redacted(raw)!r}: a password in the URI is refused (it would show in "
            "shell history, process lists and job records)",
            hint="put it in ~/.netrc (mode 0600) or a file given with --password-file, or type it when asked",
        )
    shown = raw
    try:
        parts = urlsplit(raw)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        # urlsplit's words ("Port out of range 0-65535", "Invalid IPv6 URL") name the problem.
        raise _bad(shown, "host and port", str(exc), form) from None
    if not hostname:
        raise _bad(shown, "host", "the host name is missing", form)
    if port is not None and port == 0:
        raise _bad(shown, "port", "port 0 is not a port", form)
    if parts.fragment:
        raise _bad(shown, "fragment", f"'#{parts.fragment}' has no meaning here", form)
    user = unquote(parts.username) if parts.username is not None else None
    if user == "":
        raise _bad(shown, "user", "the user name before '@' is empty", form)
    no_verify = _query(shown, parts.query, form)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    port = port or DEFAULT_PORT
    if scheme == "esx":
        if segments:
            raise _bad(
                shown,
                "path",
                f"an esx:// URI names only the host, not {parts.path!r} (a VM is chosen with --vm)",
                form,
            )
        return VsphereUri("esx", hostname, port, user, no_verify=no_verify)
    if user is None:
        raise _bad(shown, "user", "vCenter needs a user name (USER@VCENTER)", form)
    if len(segments) not in (2, 3):
        raise _bad(
            shown,
            "path",
            f"{parts.path or '/'!r} must name the datacenter, optionally the cluster, and the host",
            form,
        )
    cluster = segments[1] if len(segments) == 3 else None
    return VsphereUri("vpx", hostname, port, user, segments[0], cluster, segments[-1], no_verify)


def _query(uri: str, query: str, form: str) -> bool:
    no_verify = False
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "no_verify":
            raise _bad(uri, "query", f"unknown parameter {key!r} (only no_verify=1 is known)", form)
        if value not in ("0", "1"):
            raise _bad(uri, "query", f"no_verify={value!r} must be 0 or 1", form)
        no_verify = value == "1"
    return no_verify


def _userinfo(rest: str) -> str:
    """What precedes the last ``@`` before the query: a password may hold ``/`` or ``@`` itself."""
    return rest.split("?", 1)[0].rpartition("@")[0]


def _redacted(text: str) -> str:
    """``text`` with a password (``user:secret@``) replaced by ``***``."""
    scheme, sep, rest = text.partition("://")
    userinfo = _userinfo(rest if sep else text)
    if ":" not in userinfo:
        return text
    hidden = f"{userinfo.split(':', 1)[0]}:***"
    return f"{scheme}{sep}{hidden}{rest[len(userinfo) :]}" if sep else f"{hidden}{text[len(userinfo) :]}"


@dataclass(frozen=True)
class TlsPolicy:
    """How the server's certificate is checked: the system CA store unless one of these is set.

    ``ca_file``: trust the CA certificates in this PEM file instead.  ``thumbprint``: accept exactly
    the certificate with this SHA-256 digest (pinning, as ``govc --thumbprint``).  ``no_verify``:
    check nothing (only when the user says so; the job log warns).
    """

    ca_file: str | None = None
    thumbprint: str | None = None  # normalised: 32 colon-separated upper-case hex bytes
    no_verify: bool = False

    def __post_init__(self) -> None:
        if self.thumbprint is not None:
            object.__setattr__(self, "thumbprint", normalize_thumbprint(self.thumbprint))
        chosen = [self.ca_file is not None, self.thumbprint is not None, self.no_verify]
        if sum(chosen) > 1:
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                "choose one way to trust the server: a CA file, a pinned thumbprint or no_verify=1",
            )


def normalize_thumbprint(text: str) -> str:
    """A SHA-256 thumbprint as ``AB:CD:...`` (accepts any case, with or without colons)."""
    digits = text.strip().replace(":", "")
    if not _HEX_RE.fullmatch(digits):
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            "a thumbprint is the SHA-256 digest of the server's certificate: 64 hex digits, colons allowed",
            key="thumbprint",
            value=text,
            hint="the error that refused the certificate shows the server's thumbprint",
        )
    return format_thumbprint(bytes.fromhex(digits))


def format_thumbprint(digest: bytes) -> str:
    """A digest as colon-separated upper-case hex, the way vSphere and govc print thumbprints."""
    return ":".join(f"{b:02X}" for b in digest)


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
