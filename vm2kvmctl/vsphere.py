"""``vm2kvmctl list-vms URI``: the VMs of an ESXi host or vCenter host, through vm2kvmd.

The password never leaves this process except as a file descriptor attached to the D-Bus call
(``h``): ``--password-file`` is opened and that open file is passed as it is; a password from
``~/.netrc`` or typed at the prompt is written into a pipe whose read end is passed.  It is never
in argv, in an option value or in an error message.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from dbus_fast.signature import Variant
from rich.table import Table
from rich.text import Text

from vm2kvmctl.client import Client
from vm2kvmctl.common import EXIT_OK, Context, UsageError
from vm2kvmd.core.units import size_text
from vm2kvmd.core.vsphere.credentials import check_netrc_mode, netrc_entry, parse_netrc
from vm2kvmd.core.vsphere.uri import VsphereUri, parse_uri
from vm2kvmd.errors import Vm2kvmError

NETRC = "~/.netrc"
STDIN_PASSWORD_LIMIT = 4096  # as the daemon's own bound (adapters/password_fd.py)
_T = TypeVar("_T")


class NoPassword(UsageError):
    """No usable password source (exit 2, one line); never holds the password itself."""


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "list-vms", parents=[common], help="list the VMs of a VMware ESXi host or vCenter host"
    )
    parser.add_argument(
        "uri",
        metavar="URI",
        help="esx://[USER@]HOST[:PORT]/[?no_verify=1] or vpx://USER@VCENTER/DATACENTER[/CLUSTER]/HOST",
    )
    add_credential_options(parser)
    parser.set_defaults(func=cmd_list_vms)


def add_credential_options(parser: argparse.ArgumentParser) -> None:
    """How a vSphere host is logged in to and trusted (list-vms, and inspect/migrate of a URI)."""
    group = parser.add_argument_group("vSphere sources")
    group.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding only the password (mode 0600 or 0400), or - to read it from stdin (as the "
        "Cockpit page gives it); default: ~/.netrc, else a prompt",
    )
    trust = group.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca-file", metavar="FILE", help="trust the CA certificates in this PEM file instead of the system's"
    )
    trust.add_argument(
        "--thumbprint",
        metavar="SHA256",
        help="accept exactly the server certificate with this SHA-256 thumbprint (pinning)",
    )


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """``--vm`` and virt-v2v's ``-ic URI`` for inspect and migrate, and the credentials."""
    parser.add_argument(
        "--vm", metavar="NAME", help="with an esx:// or vpx:// SOURCE: the VM's name or managed object id"
    )
    parser.add_argument(
        "-ic",
        dest="input_connection",
        metavar="URI",
        help="virt-v2v's spelling: the esx:// or vpx:// URI; SOURCE is then the VM's name",
    )
    add_credential_options(parser)


def add_power_options(parser: argparse.ArgumentParser) -> None:
    """migrate only: what to do with a powered-on VM on vSphere."""
    group = parser.add_argument_group("powered-on vSphere VMs")
    group.add_argument(
        "--shutdown-source",
        action="store_true",
        help="shut the VM's guest down first (through VMware Tools, with a timeout)",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="with --shutdown-source: power the VM off when its guest cannot be shut down",
    )


def remote_source(args: argparse.Namespace) -> tuple[VsphereUri, str, str] | None:
    """``(uri, uri text, vm)`` when the command names a VM on vSphere; None for a local file."""
    uri_text: str | None = args.input_connection
    vm: str | None = args.vm
    if uri_text is not None:
        if vm is not None:
            raise UsageError("with -ic URI the VM is SOURCE; --vm is not needed")
        vm = args.source
    elif args.source.startswith(("esx://", "vpx://")):
        uri_text = args.source
        if vm is None:
            raise UsageError(f"{args.source}: name the VM with --vm NAME (or its id, --vm vm-42)")
    elif vm is not None or args.password_file or args.ca_file or args.thumbprint or _power(args):
        raise UsageError(
            "--vm, --password-file, --ca-file and --thumbprint go with an esx:// or vpx:// SOURCE"
        )
    if uri_text is None or vm is None:
        return None
    return parse_source_uri(uri_text), uri_text, vm


def _power(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "shutdown_source", False) or getattr(args, "force", False))


async def call_with_password(
    args: argparse.Namespace, uri: VsphereUri, call: Callable[[int], Awaitable[_T]]
) -> _T:
    """``call(fd)`` with the password's fd; a refused ~/.netrc or password file is exit 2."""
    try:
        with password_fd(args, uri) as fd:
            return await call(fd)
    except Vm2kvmError as exc:  # ~/.netrc or --password-file refused
        raise NoPassword(exc.describe()) from None


def parse_source_uri(text: str) -> VsphereUri:
    try:
        return parse_uri(text)
    except Vm2kvmError as exc:
        raise UsageError(exc.describe()) from None


def tls_options(args: argparse.Namespace) -> dict[str, Variant]:
    options: dict[str, Variant] = {}
    if args.ca_file is not None:
        options["ca-file"] = Variant("s", os.path.abspath(args.ca_file))
    if args.thumbprint is not None:
        options["thumbprint"] = Variant("s", args.thumbprint)
    return options


def _checked_open(path: str) -> int:
    """``path`` opened for reading, refused (before anything is read) if others may read it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        check_netrc_mode(info.st_mode, file=path, owner=info.st_uid, caller=os.getuid())
    except BaseException:
        os.close(fd)
        raise
    return fd


def pipe_with(secret: str | bytes) -> int:
    """The read end of a pipe holding ``secret`` (a password is far below a pipe's capacity)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, secret if isinstance(secret, bytes) else secret.encode())
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def _stdin_password() -> bytes:
    """``--password-file -``: stdin to its end, bounded (the daemon checks what it holds).

    Read here and passed on in a pipe rather than passing stdin itself: the daemon refuses a
    terminal, and reads an fd only for 5 s, which a slow writer to stdin could exceed.
    """
    data = sys.stdin.buffer.read(STDIN_PASSWORD_LIMIT + 1)
    if len(data) > STDIN_PASSWORD_LIMIT:
        raise NoPassword(f"--password-file -: stdin holds more than {STDIN_PASSWORD_LIMIT} bytes")
    if not data.strip(b"\r\n"):
        raise NoPassword("--password-file -: stdin holds no password")
    return data


def _netrc_password(uri: VsphereUri) -> str | None:
    path = os.path.expanduser(NETRC)
    try:
        fd = _checked_open(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NoPassword(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as file:
        text = file.read()
    entry = netrc_entry(parse_netrc(text, file=path), uri.host, uri.login)
    return entry.password if entry is not None else None


@contextlib.contextmanager
def password_fd(args: argparse.Namespace, uri: VsphereUri) -> Iterator[int]:
    """An fd holding the password for ``uri``: ``--password-file``, ``~/.netrc`` (mode 0600), or
    a prompt on a terminal.  Closed on exit."""
    if args.password_file == "-":
        fd = pipe_with(_stdin_password())
    elif args.password_file is not None:
        try:
            fd = _checked_open(args.password_file)
        except OSError as exc:
            raise NoPassword(f"{args.password_file}: {exc.strerror}") from None
    else:
        secret = _netrc_password(uri)
        if secret is None and sys.stdin.isatty():
            secret = getpass.getpass(f"Password for {uri.login}@{uri.address}: ")
        if not secret:
            raise NoPassword(
                f"no password for {uri.login}@{uri.host}: give --password-file FILE, add "
                f"'machine {uri.host} login {uri.login} password ...' to ~/.netrc (mode 0600), "
                "or run vm2kvmctl on a terminal to be asked"
            )
        fd = pipe_with(secret)
    try:
        yield fd
    finally:
        os.close(fd)


async def cmd_list_vms(ctx: Context, client: Client) -> int:
    args = ctx.args
    uri = parse_source_uri(args.uri)
    text = await call_with_password(args, uri, lambda fd: client.list_vms(args.uri, tls_options(args), fd))
    vms = json.loads(text)
    if ctx.json:
        ctx.print_json(vms)
    else:
        vms_table(ctx, vms)
    return EXIT_OK


def _disk_cell(disk: Mapping[str, Any]) -> str:
    provisioning = {True: "thin", False: "thick", None: ""}[disk.get("thin")]
    where = disk.get("datastore") or "-"
    return " ".join(p for p in (size_text(disk.get("capacity_bytes")), where, provisioning) if p)


def _nic_cell(nic: Mapping[str, Any]) -> str:
    return str(nic.get("network") or "-")


def _join(cells: Sequence[str]) -> str:
    return ", ".join(cells) if cells else "-"


def vms_table(ctx: Context, vms: Sequence[Mapping[str, Any]]) -> None:
    if not vms:
        ctx.out.print("No VMs.", highlight=False, markup=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ("NAME", "POWER", "GUEST OS", "CPUS", "MEMORY", "DISKS", "NICS", "SNAPSHOTS", "CBT", "TOOLS")
    for column in columns:
        table.add_column(column, justify="right" if column in ("CPUS", "MEMORY", "SNAPSHOTS") else "left")
    for vm in vms:
        cells = (
            str(vm["name"]),
            str(vm.get("power_state") or "-"),
            str(vm.get("guest_os") or "-"),
            str(vm.get("cpus", "-")),
            size_text(int(vm.get("memory_mib") or 0) << 20),
            _join([_disk_cell(d) for d in vm.get("disks", [])]),
            _join([_nic_cell(n) for n in vm.get("nics", [])]),
            str(vm.get("snapshot_count", 0)),
            "on" if vm.get("cbt") else "off",
            str(vm.get("tools_state") or "-"),
        )
        table.add_row(*(Text(cell) for cell in cells))  # Text: "[LocalDS_0]" is no markup
    ctx.out.print(table)
