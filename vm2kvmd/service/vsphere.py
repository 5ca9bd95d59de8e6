"""What ``Manager1.ListVms`` does with a vSphere host: its options, the login, the JSON answer.

The password arrives as an argument only (read from the caller's fd by the manager) and goes
to the session adapter's login; nothing here logs, stores or repeats it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from vm2kvmd.adapters.vsphere import connect
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.core.vsphere.uri import TlsPolicy, parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError

log = logging.getLogger(__name__)

# The a{sv} options of ListVms (spelled like Migrate's, with hyphens).
TLS_OPTIONS: Final = ("ca-file", "thumbprint", "no-verify")


def _text(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Vm2kvmError(ErrorCode.INVALID_OPTION, "must be a non-empty string", key=key, value=str(value))
    return value


def tls_policy(options: Mapping[str, Any], *, only_tls: bool = True) -> TlsPolicy:
    """How the server is trusted, from the options (plain values); with ``only_tls`` (ListVms)
    other keys are refused."""
    unknown = sorted(set(options) - set(TLS_OPTIONS))
    if unknown and only_tls:
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"unknown option {unknown[0]!r} for ListVms",
            hint=f"known: {', '.join(TLS_OPTIONS)}",
        )
    ca_file = _text(options, "ca-file")
    if ca_file is not None and not ca_file.startswith("/"):
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            "the CA file must be an absolute path",
            key="ca-file",
            value=ca_file,
            hint="vm2kvmd does not share the caller's working directory",
        )
    no_verify = options.get("no-verify", False)
    if not isinstance(no_verify, bool):
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION, "must be a boolean", key="no-verify", value=str(no_verify)
        )
    return TlsPolicy(ca_file=ca_file, thumbprint=_text(options, "thumbprint"), no_verify=no_verify)


def tls_mapping(tls: TlsPolicy) -> dict[str, Any]:
    """The inverse of ``tls_policy``: what a vSphere job stores with its options so that a retry
    trusts the server as the first run did (none of it is a secret)."""
    out: dict[str, Any] = {}
    if tls.ca_file is not None:
        out["ca-file"] = tls.ca_file
    if tls.thumbprint is not None:
        out["thumbprint"] = tls.thumbprint
    if tls.no_verify:
        out["no-verify"] = True
    return out


def split_tls(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored vSphere job's options: (its TLS options, the migration options)."""
    tls = {k: v for k, v in options.items() if k in TLS_OPTIONS}
    return tls, {k: v for k, v in options.items() if k not in TLS_OPTIONS}


def remote_source(uri_text: str, vm: str, options: Mapping[str, Any], password: str) -> VsphereSource:
    """The source of ``InspectRemote``/``MigrateRemote``: the URI checked (InvalidUri, a password
    in it refused), the VM named, TLS from the options; the password is kept for the job's logins."""
    parse_uri(uri_text)
    if not vm or "\x00" in vm:
        raise Vm2kvmError(ErrorCode.INVALID_OPTION, "the VM name or managed object id is empty", key="vm")
    return VsphereSource(uri_text, vm, tls_policy(options, only_tls=False), password)


def list_vms_json(uri_text: str, password: str, tls: TlsPolicy) -> str:
    """Every VM the URI's host (or vCenter host) has, as a JSON array of ``VmSummary.to_json()``.

    Blocking (login and one inventory read): run it in a thread.
    """
    uri = parse_uri(uri_text)
    with connect(uri, password, tls) as session:
        vms = session.list_vms()
    log.info("listed %d VMs of %s for the caller", len(vms), uri)
    return json.dumps([vm.to_json() for vm in vms])
