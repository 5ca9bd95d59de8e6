"""What the vSphere session tests share: a direct pyvmomi connection to compare with, a port
with nothing listening, and a proxy whose server can be swapped."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from testbed.vcsim import PASSWORD, USER, VcsimInfo


@contextmanager
def direct(info: VcsimInfo) -> Iterator[Any]:
    """The simulator's content through pyvmomi's own SmartConnect: the reference to compare with."""
    context = ssl.create_default_context(cafile=info.ca_file)
    si = SmartConnect(host=info.host, port=info.port, user=USER, pwd=PASSWORD, sslContext=context)
    try:
        yield si.RetrieveContent()
    finally:
        Disconnect(si)


def vms_under(content: Any, container: Any) -> list[Any]:
    view = content.viewManager.CreateContainerView(container, [vim.VirtualMachine], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def expected_summary(vm: Any, snapshots: int) -> dict[str, Any]:
    """A VM as list-vms should show it, read attribute by attribute through pyvmomi.

    ``snapshots`` is given: reading an unset ``snapshot`` directly drops the simulator's
    connection (govmomi 0.24), and the point is to check the session's single read anyway.
    """
    devices = vm.config.hardware.device
    # Lists of Any: pyVmomi's annotations make every device field optional.
    disk_devices: list[Any] = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    nic_devices: list[Any] = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    disks = [
        {
            "label": d.deviceInfo.label,
            # govmomi 0.24 fills only the older capacityInKB, as hosts before 5.5 did.
            "capacity_bytes": d.capacityInBytes or d.capacityInKB * 1024,
            "datastore": d.backing.datastore.name,
            "file": d.backing.fileName,
            "thin": bool(d.backing.thinProvisioned),
            "datastore_accessible": d.backing.datastore.summary.accessible,
        }
        for d in disk_devices
    ]
    nics = []
    for d in nic_devices:
        backing = d.backing
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
            (network,) = [
                n.name
                for n in vm.network
                if isinstance(n, vim.dvs.DistributedVirtualPortgroup) and n.key == backing.port.portgroupKey
            ]
        else:
            network = backing.network.name
        nics.append({"label": d.deviceInfo.label, "mac": d.macAddress, "network": network})
    return {
        "name": vm.name,
        "moid": vm._moId,
        "power_state": vm.runtime.powerState,
        "guest_os": vm.config.guestId,
        "guest_os_name": vm.config.guestFullName,
        "cpus": vm.config.hardware.numCPU,
        "memory_mib": vm.config.hardware.memoryMB,
        "disks": disks,
        "nics": nics,
        "snapshot_count": snapshots,
        "cbt": bool(vm.config.changeTrackingEnabled),
        "tools_state": vm.guest.toolsRunningStatus,
    }


class SwitchingProxy:
    """A loopback TCP proxy whose target can change: new connections go to the current one.

    Lets a test put a different server (another certificate) behind the same address mid-session.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SwitchingProxy:
        self._accepting.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by __exit__
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                thread = threading.Thread(target=_pump, args=(src, dst), daemon=True)
                self._threads.append(thread)
                thread.start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
