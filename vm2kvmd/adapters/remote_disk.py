"""A datastore file read over HTTPS, served read-only as a local NBD socket (nbdkit's curl plugin).

``RemoteDisk`` starts ``nbdkit -r`` with the curl plugin on the file's datastore URL
(``https://host/folder/PATH?dcPath=..&dsName=..``) and yields an ``nbd+unix://`` URI that QEMU and
qemu-img open as the read-only base of the job's overlay: the disk crosses the network once, only
the blocks read, and no staging copy is made.  Why nbdkit and not QEMU's https driver:
docs/libraries.md.

- The session cookie is a secret: it never goes into argv.  It lives in a 0600 file in the job's
  private work directory, which nbdkit reads through ``cookie-script`` (re-read every
  ``cookie_renew`` seconds, so ``renew_cookie`` after a session renewal reaches the next requests),
  and which is removed when the reader stops.
- A failed request (connection reset, 503 from a throttling ESXi, timeout) is retried by the retry
  filter with exponential back-off: the filter reopens the HTTP connection and repeats that one
  request, so a copy resumes where it was, not from zero.
- A host that is gone fails the copy in bounded time: each of qemu-img's queued requests has its
  own retry budget, so a dead host used to fail a copy only after minutes (8 requests x 62 s).
  Once nbdkit reports errors, a watchdog checks that the host still completes a TLS handshake;
  when it has not for ``give_up_after`` seconds, it stops nbdkit, the reads fail at once, and
  the copy fails with ``HostUnreachable`` naming the host and the file.
- Connections: the curl plugin does one request at a time per NBD connection, the limit filter
  bounds NBD connections per disk (``Limits.connections``); ``HostLimiter`` bounds connections per
  host over every job of the daemon (each job reserves its readers' share before opening them).
- TLS is verified, against ``ca_file`` when given (with ``pinned``: the one certificate whose
  thumbprint the user pinned, which curl takes as trust anchor; a refusal is then
  ``CertificateMismatch``); ``verify=False`` only with no_verify, or for a pinned certificate
  that does not name the host (curl would refuse the name).

nbdkit is owned by the context manager: started under ``setpriv --pdeathsig KILL`` and
``--exit-with-parent`` (it dies with the daemon), stopped and reaped on exit and on cancellation,
and its socket, pidfile and cookie file removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import tempfile
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from vm2kvmd.aio import in_thread, settle
from vm2kvmd.constants import DEFAULT_CONNECTIONS_PER_HOST
from vm2kvmd.errors import ErrorCode, Vm2kvmError

NBDKIT = "nbdkit"
# qemu-img requests in flight when copying from a reader: nbdkit's curl plugin serves one at a
# time per connection, so more only queue, and cost CPU (a tenth to a quarter more with 8 than 2,
# bench/README.md), which the TLS of the transfer needs.
COPY_REQUESTS = 2
_WATCHED = ("setpriv", "--pdeathsig", "KILL", "--") if shutil.which("setpriv") else ()
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Limits:
    """How hard one disk may pull on its host, and how long it keeps trying."""

    connections: int = 1  # HTTP connections per disk (one NBD connection each)
    retries: int = 5  # attempts after a failed request before the read fails
    retry_delay: int = 2  # seconds before the first retry; doubles each time (2+4+8+16+32 s)
    timeout: int = 120  # seconds one HTTP request may take
    cookie_renew: int = 10  # seconds between re-reads of the cookie file (a renewal reaches nbdkit)
    give_up_after: float = 60.0  # seconds the host may not answer, once reads fail, before the copy fails
    probe_interval: float = 2.0  # seconds between checks of the host while reads fail


class HostLimiter:
    """At most ``per_host`` HTTP connections to one host from the disk readers of every job.

    ESXi answers 503 when too many transfers run against it; the daemon holds one limiter and
    every job reserves, before it opens its first reader, the connections all its readers may
    use (``hold``).  One reservation per job, taken whole: jobs that each held part of what
    they need and waited for the rest would wait for each other for ever.  Waiters are served
    first come, first served, so a job needing many connections is not overtaken for ever by
    jobs needing few.
    """

    def __init__(self, per_host: int = DEFAULT_CONNECTIONS_PER_HOST) -> None:
        self.per_host = max(1, per_host)
        self._used: defaultdict[str, int] = defaultdict(int)
        self._waiting: defaultdict[str, deque[tuple[int, asyncio.Future[None]]]] = defaultdict(deque)

    def in_use(self, host: str) -> int:
        """Connections to ``host`` reserved now."""
        return self._used[host]

    def busy(self, host: str, connections: int) -> bool:
        """Whether ``hold(host, connections)`` would wait now."""
        return bool(self._waiting[host]) or self._used[host] + self.share(connections) > self.per_host

    def share(self, connections: int) -> int:
        """What a reservation of ``connections`` gets: at least one, at most the whole host."""
        return min(max(1, connections), self.per_host)

    @contextlib.asynccontextmanager
    async def hold(self, host: str, connections: int) -> AsyncIterator[int]:
        """Reserve ``share(connections)`` connections to ``host`` (waiting for them); yields how many."""
        wanted = self.share(connections)
        if self.busy(host, wanted):
            granted = asyncio.get_running_loop().create_future()
            queue = self._waiting[host]
            queue.append((wanted, granted))
            try:
                await granted
            except BaseException:
                if granted.done() and not granted.cancelled():
                    self._release(host, wanted)  # granted just as it was cancelled
                else:
                    queue.remove((wanted, granted))
                    self._wake(host)
                raise
        else:
            self._used[host] += wanted
        try:
            yield wanted
        finally:
            self._release(host, wanted)

    def _release(self, host: str, n: int) -> None:
        self._used[host] -= n
        self._wake(host)

    def _wake(self, host: str) -> None:
        queue = self._waiting[host]
        while queue and self._used[host] + queue[0][0] <= self.per_host:
            wanted, granted = queue.popleft()
            self._used[host] += wanted
            granted.set_result(None)


class RemoteDisk:
    """``async with RemoteDisk(url, cookie, work_dir=...) as disk:`` — ``disk.uri``/``disk.node`` read it.

    ``work_dir`` is the job's private directory (mode 0700): the cookie file, the socket and the
    pidfile go into a fresh subdirectory of it, removed on exit.
    """

    def __init__(
        self,
        url: str,
        cookie: str,
        *,
        work_dir: str | os.PathLike[str],
        ca_file: str | None = None,
        verify: bool = True,
        pinned: bool = False,
        limits: Limits = Limits(),
        label: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise Vm2kvmError(
                ErrorCode.INVALID_VALUE,
                "a datastore URL must be https://HOST/folder/PATH?dcPath=...&dsName=...",
                value=url,
            )
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 443
        self.label = label or url
        self._cookie = cookie
        self._work_dir = Path(work_dir)
        self._ca_file = ca_file
        self._verify = verify
        self._pinned = pinned  # ca_file is the one certificate the user pinned
        self._limits = limits
        self._dir: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.gave_up: str | None = None  # why the watchdog stopped the reader
        # Called when the host refuses the cookie (401/403): SessionKeeper renews the session now.
        self.on_refused: Callable[[], Awaitable[object]] | None = None
        self.socket: str | None = None

    def __repr__(self) -> str:  # never the cookie
        return f"RemoteDisk({self.url!r})"

    @property
    def uri(self) -> str:
        """The NBD URI of the running reader (``qemu-img convert URI ...``)."""
        assert self.socket is not None, "the reader is not running"
        return f"nbd+unix:///?socket={self.socket}"

    @property
    def node(self) -> dict[str, Any]:
        """The disk as a read-only blockdev node (raw over NBD): a source or an overlay's backing."""
        assert self.socket is not None, "the reader is not running"
        server = {"type": "unix", "path": self.socket}
        return {
            "driver": "raw",
            "read-only": True,
            "file": {"driver": "nbd", "server": server, "read-only": True},
        }

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def _cookie_file(self) -> Path:
        assert self._dir is not None
        return self._dir / "cookie"

    @property
    def _log_file(self) -> Path:
        assert self._dir is not None
        return self._dir / "nbdkit.log"

    async def renew_cookie(self, cookie: str) -> None:
        """Send ``cookie`` from now on (a renewed session); nbdkit re-reads it within ``cookie_renew`` s."""
        self._cookie = cookie
        if self._dir is not None:
            await in_thread(_write_private, self._cookie_file, cookie)

    async def last_error(self) -> str:
        """nbdkit's last error line (curl's words), or "" — never the cookie."""
        return await in_thread(self._last_error)

    def _last_error(self) -> str:
        if self._dir is None:
            return ""
        try:
            lines = self._log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [ln for ln in lines if "error" in ln.lower()]
        line = (errors or lines or [""])[-1].strip()
        return line.replace(self._cookie, "<cookie>") if self._cookie else line

    async def __aenter__(self) -> RemoteDisk:
        try:
            await self._start()
        except BaseException:
            await settle(self._stop())
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        detail = await settle(self.last_error()) if exc is not None else ""
        await settle(self._stop())
        if exc is not None and self.gave_up is not None:
            raise Vm2kvmError(
                ErrorCode.HOST_UNREACHABLE,
                f"reading {self.label} from {self.host}:{self.port} failed: {self.gave_up}",
                file=self.label,
                hint="check that the host is up and reachable, then retry the job (it starts the copy again)",
            ) from exc
        if isinstance(exc, Vm2kvmError) and self._pinned and "certificate" in detail.lower():
            raise Vm2kvmError(
                ErrorCode.CERTIFICATE_MISMATCH,
                f"reading {self.label}: {self.host}:{self.port} no longer presents the pinned certificate "
                f"({detail})",
                file=self.label,
                hint="the certificate changed or someone is in between; check it, pin the new one and retry",
            ) from exc
        if isinstance(exc, Vm2kvmError) and detail:
            raise Vm2kvmError(
                exc.code,
                f"{exc.message} (reading {self.label} from {self.host}: {detail})",
                file=exc.file,
                hint="check that the host is reachable and the session valid, then retry the job",
            ) from exc

    async def _start(self) -> None:
        self._dir = Path(await in_thread(tempfile.mkdtemp, prefix="remote-disk-", dir=self._work_dir))
        await in_thread(_write_private, self._cookie_file, self._cookie)
        socket_path = self._dir / "nbd.sock"
        pidfile = self._dir / "nbdkit.pid"
        limits = self._limits
        args = [
            NBDKIT,
            "--foreground",
            "--exit-with-parent",
            "--readonly",
            "--unix",
            str(socket_path),
            "--pidfile",
            str(pidfile),
            "--filter=limit",
            "--filter=retry",
            "curl",
            self.url,
            f"cookie-script=exec cat {shlex.quote(str(self._cookie_file))}",
            f"cookie-script-renew={limits.cookie_renew}",
            f"timeout={limits.timeout}",
            f"limit={limits.connections}",
            f"retries={limits.retries}",
            f"retry-delay={limits.retry_delay}",
            "retry-exponential=yes",
        ]
        if self._ca_file:
            args.append(f"cainfo={self._ca_file}")
        if not self._verify:
            args.append("sslverify=false")
        log = await in_thread(os.open, self._log_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *_WATCHED, *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        finally:
            os.close(log)
        await self._wait_ready(pidfile)
        self.socket = str(socket_path)
        self._watchdog = asyncio.create_task(self._watch(), name=f"remote-disk-watchdog {self.label}")

    async def _wait_ready(self, pidfile: Path) -> None:
        # nbdkit writes its pidfile once the socket listens.
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not await in_thread(pidfile.exists):
            if self._proc.returncode is not None or loop.time() > deadline:
                detail = await self.last_error() or "nbdkit did not start"
                raise Vm2kvmError(
                    ErrorCode.COPY_FAILED,
                    f"could not start reading {self.label}: {detail}",
                    file=self.label,
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), 0.05)

    async def _watch(self) -> None:
        """Stop nbdkit when reads fail and the host has not answered for ``give_up_after`` s."""
        limits = self._limits
        seen = 0  # bytes of nbdkit's log already looked at
        unreachable_since: float | None = None
        loop = asyncio.get_running_loop()
        while self._proc is not None and self._proc.returncode is None:
            await asyncio.sleep(limits.probe_interval)
            seen, failing, refused = await in_thread(self._new_errors, seen)
            if refused and self.on_refused is not None:
                await self.on_refused()
            if not failing and unreachable_since is None:
                continue
            reason = await in_thread(_probe, self.host, self.port, limits.probe_interval * 2)
            if reason is None:
                unreachable_since = None  # it answers: nbdkit's own retries decide
                continue
            now = loop.time()
            unreachable_since = now if unreachable_since is None else unreachable_since
            if now - unreachable_since >= limits.give_up_after:
                self.gave_up = f"the host has not answered for {limits.give_up_after:.0f} s ({reason})"
                if self._proc is not None and self._proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        self._proc.send_signal(signal.SIGTERM)
                return

    def _new_errors(self, seen: int) -> tuple[int, bool, bool]:
        """Bytes of the log now seen, whether new errors appeared, whether one was a 401/403."""
        try:
            with open(self._log_file, "rb") as f:
                f.seek(seen)
                new = f.read()
        except OSError:
            return seen, False, False
        refused = b"error: 401" in new or b"error: 403" in new
        return seen + len(new), b"error" in new.lower(), refused

    async def _stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        try:
            if self._proc is not None:
                await _terminate(self._proc)
                self._proc = None
        finally:
            self.socket = None
            if self._dir is not None:
                await in_thread(shutil.rmtree, self._dir, ignore_errors=True)
                self._dir = None


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await proc.wait()


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` completes a TLS handshake within ``timeout``, else why not.

    Only liveness: nothing is verified or sent (the reader's own connections verify).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by us only, replacing it atomically."""
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(partial, path)
