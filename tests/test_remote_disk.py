"""Reading a datastore file over HTTPS from the vSphere simulator (vm2kvmd/adapters/remote_disk.py).

Real simulator, real nbdkit, real qemu-img: the copy must be identical and sparse, resume after the
connection is cut, back off from 503s, survive the session ending mid-copy, fail cleanly and in
bounded time when the host dies, and never show the session cookie.  The 503s and the refused
cookie come from our own HTTPS front (testbed/https_front.py): the simulator does neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyVim.connect import SmartConnect
from pyVmomi import vim

from testbed.https_front import HttpsFront, session_id
from testbed.processes import pid_alive
from testbed.proxy import CuttingProxy
from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.remote_disk import Limits, RemoteDisk
from vm2kvmd.adapters.vsphere import connect, pinned_certificate
from vm2kvmd.adapters.vsphere_keepalive import SessionKeeper
from vm2kvmd.core.vsphere.uri import TlsPolicy, format_thumbprint, parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError

pytestmark = pytest.mark.slow

MIB = 1 << 20
SIZE = 64 * MIB
ZERO_MIBS = frozenset(range(1, 64, 4)) | frozenset(range(40, 48))  # holes the copy must keep
NAME = "disk-flat.vmdk"


@dataclass(frozen=True)
class Datastore:
    info: VcsimInfo
    directory: Path
    cookie: str
    digest: str

    def url(self, port: int | None = None) -> str:
        where = f"{self.info.host}:{port or self.info.port}"
        return f"https://{where}/folder/{NAME}?dcPath=ha-datacenter&dsName=LocalDS_0"


def _session(info: VcsimInfo) -> tuple[Path, str]:
    """The datastore directory and a session cookie (the session adapter's job in the daemon)."""
    context = ssl.create_default_context(cafile=info.ca_file)
    si = SmartConnect(host=info.host, port=info.port, user=USER, pwd=PASSWORD, sslContext=context)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
    (datastore,) = view.view
    view.Destroy()
    directory = Path(datastore.info.url)
    cookie = str(si._stub.cookie)
    # The session stays open: the simulator drops the cookie at logout.  No Disconnect here.
    return directory, cookie


def _populate(directory: Path) -> str:
    digest = hashlib.sha256()
    with open(directory / NAME, "wb") as f:
        for i in range(SIZE // MIB):
            chunk = bytes(MIB) if i in ZERO_MIBS else os.urandom(MIB)
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def datastore() -> Iterator[Datastore]:
    with Vcsim("esx") as info:
        directory, cookie = _session(info)
        yield Datastore(info, directory, cookie, _populate(directory))


def _sha256_of_image(path: Path) -> str:
    raw = path.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(raw)], check=True)
    digest = hashlib.sha256()
    with open(raw, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    raw.unlink()
    return digest.hexdigest()


def _allocated_mibs(path: Path) -> set[int]:
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", str(path)], check=True, capture_output=True, text=True
    ).stdout
    mibs: set[int] = set()
    for extent in json.loads(out):
        if extent["data"]:
            mibs |= set(range(extent["start"] // MIB, (extent["start"] + extent["length"]) // MIB))
    return mibs


class CmdlineWatch:
    """Reads every process's /proc/PID/cmdline while a transfer runs."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.leaks: list[str] = []
        self.saw_nbdkit = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline.startswith(b"nbdkit\0"):
                    self.saw_nbdkit = True
                if self.secret in cmdline:
                    self.leaks.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.01)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _session_id(cookie: str) -> str:
    return cookie.split(";")[0].split("=", 1)[1]


async def _copy(disk: RemoteDisk, dst: Path) -> None:
    await qemu_img.convert(
        disk.node, str(dst), dst_format="qcow2", on_progress=lambda _p: None, target_exists=False, label=NAME
    )


async def test_copy_is_identical_sparse_and_keeps_the_cookie_out_of_argv(
    datastore: Datastore, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    dst = tmp_path / "disk.qcow2"
    with CmdlineWatch(_session_id(datastore.cookie)) as watch:
        async with RemoteDisk(
            datastore.url(), datastore.cookie, work_dir=work, ca_file=datastore.info.ca_file, label=NAME
        ) as disk:
            assert disk.pid is not None and pid_alive(disk.pid)
            cookie_file = next(work.iterdir()) / "cookie"
            assert cookie_file.stat().st_mode & 0o777 == 0o600
            await _copy(disk, dst)
            pid = disk.pid
    assert watch.saw_nbdkit
    assert watch.leaks == []
    assert _sha256_of_image(dst) == datastore.digest
    assert _allocated_mibs(dst) == set(range(SIZE // MIB)) - ZERO_MIBS
    assert not pid_alive(pid)
    assert os.listdir(work) == []


async def test_a_cut_connection_resumes_where_it_was(datastore: Datastore, tmp_path: Path) -> None:
    dst = tmp_path / "disk.qcow2"
    with CuttingProxy(datastore.info.host, datastore.info.port, cut_after=20 * MIB, cuts=2) as proxy:
        # The certificate names 127.0.0.1, so TLS through the proxy still verifies.
        async with RemoteDisk(
            datastore.url(proxy.port),
            datastore.cookie,
            work_dir=tmp_path,
            ca_file=datastore.info.ca_file,
            limits=Limits(retry_delay=1),
        ) as disk:
            await _copy(disk, dst)
    assert proxy.cuts_done == 2
    assert proxy.connections >= 3  # the first and one per cut
    # One reading connection at a time per disk (nbdkit's limit filter), however many reads qemu-img
    # queues.  (The watchdog's liveness probes after a cut are TLS handshakes only, under 1 MiB.)
    assert proxy.most_at_once(min_bytes=MIB) == 1, proxy.closed
    # Resumed, not restarted: the 64 MiB crossed the proxy once, plus at most the cut requests.
    assert proxy.bytes_down < SIZE + 8 * MIB
    assert _sha256_of_image(dst) == datastore.digest


async def test_a_missing_file_fails_with_a_named_error(datastore: Datastore, tmp_path: Path) -> None:
    # (The simulator does not check the cookie on /folder, so a wrong cookie cannot be tested here.)
    with pytest.raises(Vm2kvmError) as caught:
        async with RemoteDisk(
            datastore.url().replace(NAME, "absent-flat.vmdk"),
            datastore.cookie,
            work_dir=tmp_path,
            ca_file=datastore.info.ca_file,
            limits=Limits(retries=1, retry_delay=1),
            label=NAME,
        ) as disk:
            await _copy(disk, tmp_path / "disk.qcow2")
    assert caught.value.code == ErrorCode.COPY_FAILED
    assert NAME in str(caught.value) and "404" in str(caught.value)
    assert _session_id(datastore.cookie) not in str(caught.value)
    assert os.listdir(tmp_path) == []


GIVE_UP = 8


async def test_a_host_that_dies_mid_transfer_fails_cleanly_in_bounded_time(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    sim = Vcsim("esx")
    info = sim.start()
    directory: Path | None = None
    try:
        directory, cookie = _session(info)
        _populate(directory)
        ds = Datastore(info, directory, cookie, "")
        with CuttingProxy(info.host, info.port) as proxy:
            killed_at: list[float] = []

            def kill_when_half_done() -> None:
                while proxy.bytes_down < SIZE // 2:
                    time.sleep(0.005)
                sim.kill()
                killed_at.append(time.monotonic())

            killer = threading.Thread(target=kill_when_half_done, daemon=True)
            killer.start()
            pids: list[int] = []
            with pytest.raises(Vm2kvmError) as caught:
                async with RemoteDisk(
                    ds.url(proxy.port),
                    cookie,
                    work_dir=work,
                    ca_file=info.ca_file,
                    # The default retry budget (each queued request: 2+4+...+32 s) but a short bound.
                    limits=Limits(give_up_after=GIVE_UP, probe_interval=1),
                    label=NAME,
                ) as disk:
                    assert disk.pid is not None
                    pids.append(disk.pid)
                    await _copy(disk, tmp_path / "disk.qcow2")
            failed_at = time.monotonic()
            killer.join(5)
    finally:
        sim.stop()
        # A killed simulator leaves its datastore directory (and our 64 MiB) behind.
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    error = caught.value
    # Bounded: the host's silence is noticed within a probe or two, then GIVE_UP seconds.
    assert GIVE_UP <= failed_at - killed_at[0] < GIVE_UP + 10
    assert error.code == ErrorCode.HOST_UNREACHABLE
    assert NAME in str(error) and f"{info.host}:{proxy.port}" in str(error)
    assert f"not answered for {GIVE_UP} s" in str(error)
    assert _session_id(cookie) not in str(error)
    assert not pid_alive(pids[0])
    assert os.listdir(work) == []


async def test_cancelling_a_copy_stops_the_reader_and_removes_its_files(
    datastore: Datastore, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    started = asyncio.Event()
    pids: list[int] = []

    async def copy() -> None:
        async with RemoteDisk(
            datastore.url(), datastore.cookie, work_dir=work, ca_file=datastore.info.ca_file
        ) as disk:
            assert disk.pid is not None
            pids.append(disk.pid)
            await disk.renew_cookie("vmware_soap_session=renewed")
            cookie_file = Path(disk.socket or "").parent / "cookie"
            assert cookie_file.read_text() == "vmware_soap_session=renewed"
            assert cookie_file.stat().st_mode & 0o777 == 0o600
            await qemu_img.convert(
                disk.node,
                str(tmp_path / "disk.qcow2"),
                dst_format="qcow2",
                on_progress=lambda p: started.set() if p > 0 else None,
                target_exists=False,
            )

    task = asyncio.create_task(copy())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_alive(pids[0])
    assert os.listdir(work) == []


async def test_503_answers_are_retried_with_exponential_back_off(
    datastore: Datastore, tmp_path: Path
) -> None:
    busy = 3
    info = datastore.info
    with HttpsFront(info.host, info.port, info.ca_file, busy_first=busy) as front:
        async with RemoteDisk(
            datastore.url(front.port),
            datastore.cookie,
            work_dir=tmp_path,
            ca_file=front.ca_file,
            limits=Limits(retry_delay=1),
        ) as disk:
            await _copy(disk, tmp_path / "disk.qcow2")
    data = [r for r in front.requests if r.ranged]
    assert [r.status for r in data[:busy]] == [503] * busy and data[busy].status == 206
    assert all(r.status == 206 for r in data[busy:])
    # Each retry waits twice as long as the one before: 1, 2, 4 s after the 503s.  Never less;
    # a loaded machine (CI's 2 cores) may add up to a second to a wait, not a doubling.
    gaps = [b.at - a.at for a, b in itertools.pairwise(data[: busy + 1])]
    assert all(want - 0.05 <= got < want + 1.0 for want, got in zip([1, 2, 4], gaps, strict=True)), gaps
    assert _sha256_of_image(tmp_path / "disk.qcow2") == datastore.digest
    assert os.listdir(tmp_path) == ["disk.qcow2"]


async def test_a_session_ended_mid_copy_is_renewed_and_the_copy_completes(
    datastore: Datastore, tmp_path: Path
) -> None:
    info = datastore.info
    uri = parse_uri(f"esx://{USER}@{info.host}:{info.port}/")
    session = await asyncio.to_thread(connect, uri, PASSWORD, TlsPolicy(ca_file=info.ca_file))
    admin = await asyncio.to_thread(
        SmartConnect, host=info.host, port=info.port, user=USER, pwd=PASSWORD,
        sslContext=ssl.create_default_context(cafile=info.ca_file),
    )  # fmt: skip
    manager = await asyncio.to_thread(lambda: admin.RetrieveContent().sessionManager)
    victim = await asyncio.to_thread(lambda: session.session_key)
    lock = threading.Lock()
    ended: list[str] = []

    def live(cookie: str) -> bool:
        # As ESXi: a /folder request needs a live session (the simulator does not check).
        with lock:
            return session_id(cookie) in {str(s.key) for s in manager.sessionList}

    def end_the_session(n: int) -> None:
        if n == 8:  # mid-copy, as an administrator ending it
            with lock:
                manager.TerminateSession([victim])
                ended.append(victim)

    try:
        with HttpsFront(
            info.host, info.port, info.ca_file, check_cookie=live, on_data_request=end_the_session
        ) as front:
            async with (
                # Far longer than the copy: the renewal comes from the reader's 401s, not the clock.
                SessionKeeper(session, interval=600) as keeper,
                RemoteDisk(
                    datastore.url(front.port),
                    session.cookie,
                    work_dir=tmp_path,
                    ca_file=front.ca_file,
                    limits=Limits(retry_delay=1, cookie_renew=1, probe_interval=0.5),
                ) as disk,
            ):
                keeper.watch(disk)
                await _copy(disk, tmp_path / "disk.qcow2")
            renewed = await asyncio.to_thread(lambda: session.session_key)
    finally:
        await asyncio.to_thread(session.close)
        await asyncio.to_thread(admin._stub.DropConnections)
    assert keeper.renewals == 1 and len(ended) == 1
    refused = [r for r in front.requests if r.status == 401]
    assert refused and {r.session for r in refused} == {ended[0]}
    after = front.requests[front.requests.index(refused[-1]) + 1 :]
    assert after and all(r.status in (200, 206) and r.session == renewed for r in after)
    assert _sha256_of_image(tmp_path / "disk.qcow2") == datastore.digest


async def test_the_pinned_certificate_is_the_only_one_a_reader_trusts(
    datastore: Datastore, tmp_path: Path
) -> None:
    """``--thumbprint`` reaches nbdkit: the host's certificate, checked against the pin, is the
    readers' CA file, so a host that swaps its certificate later (our HTTPS front: another
    self-signed certificate for 127.0.0.1) is refused by the check and by curl."""
    info = datastore.info
    pem, names_host = await asyncio.to_thread(
        pinned_certificate, parse_uri(f"esx://{USER}@{info.host}:{info.port}/"), info.thumbprint
    )
    assert names_host
    pinned = tmp_path / "pinned.pem"
    await asyncio.to_thread(pinned.write_text, pem)
    with HttpsFront(info.host, info.port, info.ca_file) as front:
        swapped = parse_uri(f"esx://{USER}@{info.host}:{front.port}/")
        with pytest.raises(Vm2kvmError) as check:
            await asyncio.to_thread(pinned_certificate, swapped, info.thumbprint)
        # A pinned certificate that does not name the host (the front's names 127.0.0.1 only):
        # curl would refuse the name, so the job's readers go unverified (and its log says so).
        front_pem = await asyncio.to_thread(Path(front.ca_file).read_text)
        der = ssl.PEM_cert_to_DER_cert(front_pem)
        front_pin = format_thumbprint(hashlib.sha256(der).digest())
        by_name = parse_uri(f"esx://{USER}@localhost:{front.port}/")
        assert await asyncio.to_thread(pinned_certificate, by_name, front_pin) == (front_pem, False)
        work = tmp_path / "swapped"
        work.mkdir()
        with pytest.raises(Vm2kvmError) as read:
            async with RemoteDisk(
                datastore.url(front.port),
                datastore.cookie,
                work_dir=work,
                ca_file=str(pinned),
                pinned=True,
                limits=Limits(retries=1, retry_delay=1),
                label=NAME,
            ) as disk:
                await _copy(disk, tmp_path / "swapped.qcow2")
    assert check.value.code == ErrorCode.CERTIFICATE_MISMATCH
    assert info.thumbprint in str(check.value) and "--thumbprint" in (check.value.hint or "")
    assert read.value.code == ErrorCode.CERTIFICATE_MISMATCH, read.value
    assert NAME in str(read.value)
    assert os.listdir(work) == []
    # The same reader reads the pinned host itself.
    async with RemoteDisk(
        datastore.url(), datastore.cookie, work_dir=work, ca_file=str(pinned), pinned=True, label=NAME
    ) as disk:
        await _copy(disk, tmp_path / "disk.qcow2")
    assert _sha256_of_image(tmp_path / "disk.qcow2") == datastore.digest
