"""vm2kvmctl: the command-line client of vm2kvmd.

Exit status: 0 success; 1 the operation or the job failed; 2 usage error,
or the bus or vm2kvmd cannot be reached; 130 interrupted (Ctrl-C).
Failures are one line on stderr: ``vm2kvmctl: error: <message>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from dbus_fast.signature import Variant
from rich.console import Console

from vm2kvmctl import jobs, keys, output, vsphere
from vm2kvmctl.client import Client, DaemonError, Unreachable, job_number
from vm2kvmctl.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Context,
    UsageError,
    error_line,
    parse_job,
)
from vm2kvmctl.follow import CtrlC, OnInterrupt, ctrl_c_policy, follow_and_report, interactive, wait_job
from vm2kvmctl.report import print_report
from vm2kvmd import __version__
from vm2kvmd.constants import error_name
from vm2kvmd.errors import ErrorCode

CANCEL_WAIT: Final = 120.0  # seconds `cancel` waits for the job to clean up
NOT_AUTHORIZED: Final = error_name(ErrorCode.NOT_AUTHORIZED)
PRIVILEGES_HINT: Final = (
    "run vm2kvmctl with sufficient privileges (as root, or as a user polkit authorizes for this action)"
)


# --- arguments ---------------------------------------------------------------------


def absolute(path: str) -> str:
    """The daemon does not share our working directory."""
    return path if "://" in path else os.path.abspath(path)


def network_entry(text: str) -> str:
    """``--network``/``--bridge`` as the daemon takes them: ``VMWARE=TARGET``, or ``TARGET`` alone
    for every other network.  virt-v2v's ``IN:OUT`` becomes ``IN=OUT`` (split at the first colon,
    as virt-v2v does; a VMware network with a colon in its name is written ``NAME=TARGET``).
    """
    if "=" in text or ":" not in text:
        return text
    vmware, _, target = text.partition(":")
    return f"{vmware}={target}"


def mapping_options(args: argparse.Namespace) -> dict[str, Variant]:
    options: dict[str, Variant] = {}
    for attr, key in (
        ("name", "name"),
        ("pool", "pool"),
        ("format", "format"),
        ("connect", "connect"),
        ("domain_type", "domain-type"),
        ("allocation", "allocation"),
        ("snapshots", "snapshots"),
    ):
        if getattr(args, attr) is not None:
            options[key] = Variant("s", getattr(args, attr))
    if args.output_dir is not None:
        options["output-dir"] = Variant("s", absolute(args.output_dir))
    if args.network:
        options["network"] = Variant("as", [network_entry(item) for item in args.network])
    if args.bridge:
        options["bridge"] = Variant("as", [network_entry(item) for item in args.bridge])
    if args.datastore:
        pairs = []
        for item in args.datastore:
            name, sep, directory = item.partition("=")
            pairs.append(f"{name}={absolute(directory)}" if sep and directory else item)
        options["datastore"] = Variant("as", pairs)
    if args.allow_external_paths:
        options["allow-external-paths"] = Variant("b", True)
    if getattr(args, "verify", False):  # migrate only
        options["verify"] = Variant("b", True)
    if getattr(args, "no_guest_conversion", False):  # migrate only
        options["guest-conversion"] = Variant("b", False)
    if getattr(args, "root", None):
        options["root"] = Variant("s", args.root)
    if getattr(args, "install_guest_agent", False):
        options["install-guest-agent"] = Variant("b", True)
    if getattr(args, "shutdown_source", False):
        options["shutdown-source"] = Variant("b", True)
    if getattr(args, "force", False):
        options["force"] = Variant("b", True)
    if getattr(args, "virtio_win", None):
        options["virtio-win"] = Variant("s", absolute(args.virtio_win))
    if getattr(args, "disk_bus", None):
        options["disk-bus"] = Variant("s", args.disk_bus)
    return options


def _add_mapping_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("migration options")
    # -on, -os, -of, and --bridge/--network without "=": virt-v2v's spellings, for its users.
    group.add_argument("--name", "-on", help="name of the libvirt domain (default: the VM's name)")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--pool", "-os", help="libvirt storage pool for the disks (default: default)")
    target.add_argument("--output-dir", metavar="DIR", help="write disks and domain XML here; define nothing")
    group.add_argument("--format", "-of", choices=("qcow2", "raw"), help="disk image format (default: qcow2)")
    group.add_argument(
        "--allocation",
        choices=("sparse", "preallocated"),
        help="sparse: the disks take only their data (default); preallocated: all their space up front",
    )
    group.add_argument(
        "--snapshots",
        choices=("flatten", "keep"),
        help="flatten: copy the disks as they are now (default); keep: one qcow2 per VMDK layer "
        "and the VMware snapshots as libvirt snapshots",
    )
    group.add_argument(
        "--network",
        action="append",
        metavar="VMWARE=LIBVIRT",
        help="map a VMware network to a libvirt network (also VMWARE:LIBVIRT); "
        "LIBVIRT alone: every VMware network not mapped otherwise",
    )
    group.add_argument(
        "--bridge",
        action="append",
        metavar="VMWARE=BRIDGE",
        help="map a VMware network to a host bridge (also VMWARE:BRIDGE); "
        "BRIDGE alone: every VMware network not mapped otherwise",
    )
    group.add_argument("--connect", metavar="URI", help="libvirt URI (default: the daemon's, qemu:///system)")
    group.add_argument("--domain-type", choices=("kvm", "qemu"), help="libvirt domain type (default: kvm)")
    group.add_argument(
        "--datastore", action="append", metavar="NAME=DIR", help="directory of the ESXi datastore [NAME]"
    )
    group.add_argument(
        "--allow-external-paths",
        action="store_true",
        help="follow disk paths that lead outside the VM's directory",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vm2kvmctl", description="Migrate VMware VMs into libvirt/KVM through vm2kvmd."
    )
    parser.add_argument("--version", action="version", version=f"vm2kvmctl {__version__}")
    parser.add_argument("--bus", choices=("system", "session"), default="system", help="bus of vm2kvmd")
    parser.add_argument("--json", action="store_true", default=False, help="machine-readable output")
    parser.add_argument(
        "--no-ask-password",
        action="store_true",
        default=False,
        help="do not let polkit ask for a password (the default when stdin is not a terminal)",
    )
    # The global options are accepted after the command too.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bus", choices=("system", "session"), default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument(
        "--no-ask-password", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", parents=[common], help="show what a VM would become")
    inspect.add_argument(
        "source", metavar="SOURCE", help="the .vmx, .ovf or .ova file, or an esx:// or vpx:// URI"
    )
    inspect.add_argument("--xml", action="store_true", help="print only the domain XML")
    inspect.add_argument(
        "--no-guest-conversion",
        action="store_true",
        help="show the plan of migrate --no-guest-conversion (devices as they are)",
    )
    vsphere.add_source_options(inspect)
    _add_mapping_options(inspect)
    inspect.set_defaults(func=cmd_inspect)

    migrate = commands.add_parser("migrate", parents=[common], help="migrate a VM")
    migrate.add_argument(
        "source", metavar="SOURCE", help="the .vmx, .ovf or .ova file, or an esx:// or vpx:// URI"
    )
    vsphere.add_source_options(migrate)
    vsphere.add_power_options(migrate)
    migrate.add_argument("--detach", action="store_true", help="start the job and exit")
    migrate.add_argument(
        "--verify",
        action="store_true",
        help="after copying, compare every disk with its source (reads the source again)",
    )
    guest = migrate.add_argument_group("guest conversion")
    guest.add_argument(
        "--no-guest-conversion",
        action="store_true",
        help="copy and define the VM as it is: no drivers, device names or VMware Tools changed "
        "(it keeps SATA disks and e1000 NICs)",
    )
    guest.add_argument(
        "--root",
        metavar="DEVICE",
        help="the OS to convert on a multi-boot VM, by its root file system as the conversion "
        "names it (e.g. /dev/sda2; the job log lists them); default: the first",
    )
    guest.add_argument(
        "--install-guest-agent",
        action="store_true",
        help="install qemu-guest-agent at the guest's first boot (needs a package source there)",
    )
    guest.add_argument(
        "--virtio-win",
        metavar="DIR",
        help="Windows guests: the virtio-win drivers (an unpacked ISO or /usr/share/virtio-win of the "
        "RPM); default: $VIRTIO_WIN of the daemon, else /usr/share/virtio-win",
    )
    keys.add_key_option(guest)
    guest.add_argument(
        "--disk-bus",
        choices=("virtio", "virtio-scsi", "sata"),
        help="the bus for the disks; refused when the guest has no driver for it (default: the best "
        "the guest drives: virtio, else virtio-scsi, else SATA)",
    )
    _add_mapping_options(migrate)
    migrate.set_defaults(func=cmd_migrate)

    jobs.add_parsers(commands, common)
    vsphere.add_parsers(commands, common)

    for name, func, text in (
        ("status", cmd_status, "show a job"),
        ("watch", cmd_watch, "follow a job until it ends"),
        ("cancel", cmd_cancel, "cancel a job"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("job", metavar="JOB", help="job number or object path")
        sub.set_defaults(func=func)

    report = commands.add_parser(
        "report", parents=[common], help="show what a completed migration did: source vs target"
    )
    report.add_argument("job", metavar="JOB", help="job number or object path")
    report.set_defaults(func=cmd_report)
    return parser


# --- commands ----------------------------------------------------------------------------


async def cmd_inspect(ctx: Context, client: Client) -> int:
    args = ctx.args
    if args.xml and ctx.json:
        raise UsageError("--xml and --json exclude each other")
    remote = vsphere.remote_source(args)
    if remote is not None:
        uri, uri_text, vm = remote
        options = {**mapping_options(args), **vsphere.tls_options(args)}
        text = await vsphere.call_with_password(
            args, uri, lambda fd: client.inspect_remote(uri_text, vm, options, fd)
        )
    else:
        text = await client.inspect(absolute(args.source), mapping_options(args))
    data = json.loads(text)
    if ctx.json:
        ctx.print_json(data)
        return EXIT_OK
    notes = [str(note) for note in data.get("notes", [])]
    xml = str(data.get("domain_xml", ""))
    if args.xml:
        for note in notes:
            print(f"vm2kvmctl: warning: {note}", file=sys.stderr)
        ctx.out.out(xml.rstrip("\n"), highlight=False)
        return EXIT_OK
    for line in output.inspection_summary(data):
        ctx.out.print(line, highlight=False, markup=False, soft_wrap=True)
    if notes:
        ctx.out.print("Notes:", highlight=False, markup=False)
        for note in notes:
            ctx.out.print(f"  - {note}", highlight=False, markup=False, soft_wrap=True)
    ctx.out.print("Domain XML:", highlight=False, markup=False)
    ctx.out.out(xml.rstrip("\n"), highlight=False)
    return EXIT_OK


async def cmd_migrate(ctx: Context, client: Client) -> int:
    args = ctx.args
    remote = vsphere.remote_source(args)
    options = mapping_options(args)

    async def start() -> str:
        with keys.key_fd(args) as key:  # --key-file: the BitLocker key, as an fd only
            if remote is None:
                return await client.migrate(absolute(args.source), options, key)
            uri, uri_text, vm = remote
            more = {**options, **vsphere.tls_options(args)}
            return await vsphere.call_with_password(
                args, uri, lambda fd: client.migrate_remote(uri_text, vm, more, fd, key)
            )

    if args.detach:
        path = await start()
        if ctx.json:
            ctx.print_json({"job": path, "number": job_number(path)})
        else:
            number = job_number(path)
            ctx.out.print(
                f"Started job {number} ({path}); follow it with: vm2kvmctl watch {number}", highlight=False
            )
        return EXIT_OK
    signals = await client.subscribe()  # before Migrate: no update can be missed
    with CtrlC(signals):
        path = await start()
        return await follow_and_report(ctx, client, path, on_interrupt=ctrl_c_policy())


async def cmd_status(ctx: Context, client: Client) -> int:
    path = parse_job(ctx.args.job)
    props = await client.job(path)
    if ctx.json:
        ctx.print_json(output.job_json(path, props))
    else:
        output.job_details(ctx.out, path, props)
    return EXIT_OK


async def cmd_watch(ctx: Context, client: Client) -> int:
    path = parse_job(ctx.args.job)
    with CtrlC(await client.subscribe()):
        return await follow_and_report(ctx, client, path, on_interrupt=OnInterrupt.STOP)


async def cmd_cancel(ctx: Context, client: Client) -> int:
    path = parse_job(ctx.args.job)
    number = job_number(path)
    before = await client.job(path)
    if before.get("State") in output.FINISHED:
        error_line(f"job {number} has already {before['State']}; nothing to cancel")
        return EXIT_FAILED
    signals = await client.subscribe()
    await client.cancel(path)
    try:
        with CtrlC(signals):
            async with asyncio.timeout(CANCEL_WAIT):
                props = (await wait_job(client, path, view=None, on_interrupt=OnInterrupt.STOP)).props
    except TimeoutError:
        error_line(f"job {number} is still stopping after {CANCEL_WAIT:.0f} s")
        return EXIT_FAILED
    state = props.get("State")
    if ctx.json:
        ctx.print_json(output.job_json(path, props))
    if state == "cancelled":
        if not ctx.json:
            ctx.out.print(f"Job {number} cancelled.", highlight=False)
        return EXIT_OK
    if state not in output.FINISHED:
        return EXIT_INTERRUPTED
    error_line(f"job {number} {state} before it could be cancelled")
    return EXIT_FAILED


async def cmd_report(ctx: Context, client: Client) -> int:
    path = parse_job(ctx.args.job)
    data = json.loads(await client.report(path))
    if ctx.json:
        ctx.print_json(data)
    else:
        print_report(ctx.out, data)
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------------


Command = Callable[[Context, Client], Awaitable[int]]


def daemon_error_text(exc: DaemonError) -> str:
    """The one line for an error vm2kvmd answered; a refusal says what would help."""
    if exc.name == NOT_AUTHORIZED and "privilege" not in exc.message.lower():
        return f"{exc.message.rstrip('. ')}; {PRIVILEGES_HINT}"
    return exc.message


async def run(args: argparse.Namespace) -> int:
    # Not a terminal: no line wrapping (logs and pipes keep long paths whole).
    out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 10_000)
    err = Console(stderr=True, highlight=False, markup=False, width=None if sys.stderr.isatty() else 10_000)
    ctx = Context(args, out, err)
    try:
        client = await Client.connect(args.bus, interactive_auth=interactive() and not args.no_ask_password)
    except Unreachable as exc:
        error_line(str(exc))
        return EXIT_UNREACHABLE
    command: Command = args.func
    try:
        return await command(ctx, client)
    except Unreachable as exc:
        error_line(str(exc))
        return EXIT_UNREACHABLE
    except DaemonError as exc:
        if ctx.json:
            ctx.print_json({"error": {"name": exc.name, "message": exc.message}})
        error_line(daemon_error_text(exc))
        return EXIT_FAILED
    except UsageError as exc:
        error_line(str(exc))
        return EXIT_USAGE
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
