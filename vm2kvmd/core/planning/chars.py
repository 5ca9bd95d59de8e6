"""Serial and parallel ports.

Output files never go where VMware wrote them: that is usually the source VM's
directory, which the migration only reads.  They go to libvirt's log directory
instead, named after the domain (reduced to safe characters); sockets go to
libvirt's QEMU state directory, named after the domain UUID because a Unix
socket path has at most 107 bytes.
"""

from __future__ import annotations

import posixpath

from vm2kvmd.core.hardware.model import CharPort, Note, PortKind
from vm2kvmd.core.planning.plan import PlannedCharPort
from vm2kvmd.core.planning.storage import file_safe

LOG_DIR = "/var/log/libvirt/qemu"
SOCKET_DIR = "/var/lib/libvirt/qemu"
# QEMU emulates four ISA serial ports (libvirt: "Maximum supported number of
# ISA serial ports is '4'") and three ISA parallel ports.
MAX_SERIAL_INDEX = 3
MAX_PARALLEL_INDEX = 2
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def _inside(path: str, directory: str) -> bool:
    path = posixpath.normpath(path)
    directory = posixpath.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _log_path(domain_name: str, device: str, index: int) -> str:
    return posixpath.join(LOG_DIR, f"{file_safe(domain_name)}-{device}{index}.log")


def _socket_path(domain_uuid: str, device: str, index: int) -> str:
    return posixpath.join(SOCKET_DIR, f"vm2kvm-{domain_uuid}-{device}{index}.sock")


def _plan_serial(
    port: CharPort, domain_name: str, domain_uuid: str, source_dir: str, notes: list[Note]
) -> PlannedCharPort | None:
    key = f"serial{port.index}"
    if port.kind is PortKind.THINPRINT:
        notes.append(Note("ThinPrint port (VMware Tools printing) has no KVM equivalent; dropped", key))
        return None
    if port.index > MAX_SERIAL_INDEX:
        notes.append(Note("QEMU emulates only serial0..serial3; dropped", key))
        return None
    if not port.start_connected:
        notes.append(Note("was not connected at power-on; connected on KVM", key))
    if port.kind is PortKind.FILE:
        path = _log_path(domain_name, "serial", port.index)
        notes.append(Note(f"output file {port.target} becomes {path}", key))
        return PlannedCharPort(source=port, device="serial", kind="file", path=path)
    if port.kind is PortKind.DEVICE:
        if port.target and port.target.startswith("/dev/"):
            return PlannedCharPort(source=port, device="serial", kind="dev", path=port.target)
        notes.append(Note(f"host device {port.target} is not a Linux device; a pty is used", key))
        return PlannedCharPort(source=port, device="serial", kind="pty")
    if port.kind is PortKind.PIPE:
        return _plan_pipe(port, domain_uuid, source_dir, notes)
    return _plan_network(port, notes)


def _plan_pipe(port: CharPort, domain_uuid: str, source_dir: str, notes: list[Note]) -> PlannedCharPort:
    key = f"serial{port.index}"
    # VMware's pipe "server" end creates the pipe; QEMU does the same in bind mode.
    mode = "bind" if port.pipe_server else "connect"
    target = port.target or ""
    keep = (
        target.startswith("/")
        and not _inside(target, source_dir)
        and len(target.encode()) <= _SUN_PATH_MAX
        and "\n" not in target
    )
    if keep:
        return PlannedCharPort(source=port, device="serial", kind="unix", path=target, mode=mode)
    path = _socket_path(domain_uuid, "serial", port.index)
    if not target.startswith("/"):
        why = "is not a Unix socket path (a Windows named pipe?)"
    elif _inside(target, source_dir):
        why = "lies in the source VM's directory, which is never written"
    else:
        why = "is too long for a Unix socket"
    notes.append(Note(f"pipe {target} {why}; the Unix socket is {path}", key))
    return PlannedCharPort(source=port, device="serial", kind="unix", path=path, mode=mode)


def _plan_network(port: CharPort, notes: list[Note]) -> PlannedCharPort:
    key = f"serial{port.index}"
    ep = port.endpoint
    if ep is None:
        notes.append(Note(f"network port {port.target} has no usable host:port; a pty is used", key))
        return PlannedCharPort(source=port, device="serial", kind="pty")
    if not ep.server and not ep.host:
        notes.append(Note(f"network client port {port.target} names no host; a pty is used", key))
        return PlannedCharPort(source=port, device="serial", kind="pty")
    proto = ep.protocol.lower()
    protocol = "telnet" if proto.startswith("telnet") else "raw"
    if any(tls in proto for tls in ("ssl", "tls", "telnets")):
        notes.append(Note(f"{proto}:// used TLS; libvirt's serial TCP port here is unencrypted", key))
    # libvirt requires a host for tcp ports ("Missing source host attribute");
    # VMware's server URIs (telnet://:2345) listen on every address, so do we.
    host = ep.host or ("::" if proto.endswith("6") else "0.0.0.0")
    mode = "bind" if ep.server else "connect"
    return PlannedCharPort(
        source=port, device="serial", kind="tcp", host=host, port=ep.port, mode=mode, protocol=protocol
    )


def plan_serials(
    ports: tuple[CharPort, ...], domain_name: str, domain_uuid: str, source_dir: str, notes: list[Note]
) -> tuple[PlannedCharPort, ...]:
    planned = (
        _plan_serial(port, domain_name, domain_uuid, source_dir, notes)
        for port in sorted(ports, key=lambda p: p.index)
    )
    return tuple(p for p in planned if p is not None)


def plan_parallels(
    ports: tuple[CharPort, ...], domain_name: str, notes: list[Note]
) -> tuple[PlannedCharPort, ...]:
    planned: list[PlannedCharPort] = []
    for port in sorted(ports, key=lambda p: p.index):
        key = f"parallel{port.index}"
        if port.index > MAX_PARALLEL_INDEX:
            notes.append(Note("QEMU emulates only parallel0..parallel2; dropped", key))
        elif port.kind is PortKind.FILE:
            path = _log_path(domain_name, "parallel", port.index)
            notes.append(Note(f"output file {port.target} becomes {path}", key))
            planned.append(PlannedCharPort(source=port, device="parallel", kind="file", path=path))
        elif port.kind is PortKind.DEVICE and port.target and port.target.startswith("/dev/"):
            planned.append(PlannedCharPort(source=port, device="parallel", kind="dev", path=port.target))
        else:
            notes.append(
                Note(f"parallel port of kind {port.kind.value} ({port.target}) is not mapped; dropped", key)
            )
    return tuple(planned)
