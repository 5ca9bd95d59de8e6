"""vm2kvmd: the D-Bus service that owns conversion jobs.

    vm2kvmd [--bus system|session] [--config FILE] [--connect URI] [--work-dir DIR]
            [--state-dir DIR] [--log-level LEVEL]

Reads ``/etc/vm2kvm/vm2kvmd.conf`` (or ``--config FILE``; flags override it),
opens the job store in the state directory and recovers the jobs an earlier
run left unfinished, owns ``org.vm2kvm.Daemon1`` (exits 1 with one line when
it cannot), serves until SIGTERM/SIGINT, then cancels queued and running jobs,
waits for them, releases the name, closes the store and exits 0.  Logs go to
journald, with structured fields, when its socket exists, else to stderr
(docs/logging.md).  Under systemd (``Type=notify``) it reports READY once the
name is owned, the job counts as STATUS, watchdog pings and STOPPING, and holds
a logind shutdown/sleep inhibitor while jobs run (docs/systemd.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

from dbus_fast import DBusError, NameFlag, RequestNameReply

from vm2kvmd import __version__
from vm2kvmd.config import ConfigError, DaemonConfig, load_config
from vm2kvmd.constants import BUS_NAME, DEFAULT_CONFIG_PATH
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import Vm2kvmError
from vm2kvmd.service.bus import ServiceBus, connect
from vm2kvmd.service.inhibit import Inhibitor
from vm2kvmd.service.manager import Manager
from vm2kvmd.service.recovery import recover
from vm2kvmd.service.sdnotify import Notifier, status_text
from vm2kvmd.service.store import JobStore, StoreError

log = logging.getLogger("vm2kvmd")

SHUTDOWN_TIMEOUT = 60.0  # seconds jobs get to clean up after being cancelled
JOURNAL_SOCKET = "/run/systemd/journal/socket"
STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StartupError(Exception):
    """The daemon cannot start; the message is the one line the admin sees."""


class Daemon:
    """A ``Manager`` on a bus connection that owns ``org.vm2kvm.Daemon1``."""

    def __init__(
        self,
        manager: Manager,
        *,
        bus: str = "system",
        address: str | None = None,
        config: DaemonConfig | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.manager = manager
        self.config = config or DaemonConfig()
        self.bus_kind = bus
        self._address = address
        self._bus: ServiceBus | None = None
        self._disconnected: asyncio.Task[None] | None = None
        # sd_notify (inert unless systemd set $NOTIFY_SOCKET) and the logind inhibitor,
        # both kept current by the manager's listener once the name is owned.
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        self._inhibitor: Inhibitor | None = None

    @property
    def bus(self) -> ServiceBus:
        if self._bus is None:
            raise RuntimeError("daemon not started")
        return self._bus

    async def start(self) -> None:
        try:
            self._bus = await connect(self.bus_kind, self._address, owner_of=self.manager.job_owner)
        except Exception as exc:
            raise StartupError(f"cannot connect to the {self.bus_kind} bus: {_reason(exc)}") from exc
        self._disconnected = asyncio.create_task(self._watch(self._bus), name="vm2kvmd bus watch")
        # Objects first, then the name: a caller that sees the name finds the objects.
        self.manager.attach(self._bus)
        try:
            reply = await self._bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as exc:
            await self._disconnect()
            raise StartupError(
                f"not allowed to own {BUS_NAME} on the {self.bus_kind} bus: {exc.text}"
            ) from exc
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            await self._disconnect()
            raise StartupError(
                f"{BUS_NAME} is already owned on the {self.bus_kind} bus (is another vm2kvmd running?)"
            )
        log.info("vm2kvmd %s serving %s on the %s bus", __version__, BUS_NAME, self.bus_kind)
        # READY only now: systemd (Type=notify) reports the unit started, and D-Bus
        # activation hands callers over, once the name is really ours.
        self._inhibitor = Inhibitor(self._bus)
        self.manager.add_listener(self._jobs_changed)
        running, queued = self.manager.counts()
        self._inhibitor.update(running)
        self.notifier.ready(status_text(running, queued))
        self.notifier.start_watchdog()

    def _jobs_changed(self) -> None:
        """The manager's listener: STATUS= and the inhibitor follow the job counts."""
        running, queued = self.manager.counts()
        self.notifier.counts(running, queued)
        if self._inhibitor is not None:
            self._inhibitor.update(running)

    async def stop(self, grace: float = SHUTDOWN_TIMEOUT) -> None:
        """Cancel and await the jobs (``grace`` seconds at most), then release the name and disconnect."""
        self.notifier.stopping(*self.manager.counts())
        await self.manager.shutdown(grace)
        if self._inhibitor is not None:
            await self._inhibitor.close()
        if self._bus is not None and self._bus.connected:
            # A round trip after the jobs' last signals: they are on the wire before we close.
            with contextlib.suppress(Exception):
                await self._bus.release_name(BUS_NAME)
        # The watchdog pings until here: a shutdown stuck in the jobs' cleanup is still caught.
        await self.notifier.close()
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._bus is not None and self._bus.connected:
            self._bus.disconnect()
        if self._disconnected is not None:
            await self._disconnected

    @staticmethod
    async def _watch(bus: ServiceBus) -> None:
        """Until the connection ends, for whatever reason (never raises)."""
        try:
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        except Exception as exc:
            log.error("lost the bus connection: %s", exc)

    async def run_until_stopped(self, stop: asyncio.Event) -> bool:
        """Serve until ``stop`` is set (True) or the bus goes away (False)."""
        assert self._disconnected is not None, "daemon not started"
        stopped = asyncio.create_task(stop.wait(), name="vm2kvmd stop request")
        try:
            await asyncio.wait({stopped, self._disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            await asyncio.gather(stopped, return_exceptions=True)
        if self._disconnected.done():
            log.error("the bus connection is gone")
            return False
        return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vm2kvmd", description="vm2kvm migration service (D-Bus)")
    parser.add_argument(
        "--bus",
        choices=("system", "session"),
        default="system",
        help="bus to serve on (default: system; address from DBUS_*_BUS_ADDRESS)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"configuration file (TOML; default: {DEFAULT_CONFIG_PATH}, which may be absent)",
    )
    parser.add_argument(
        "--connect",
        metavar="URI",
        help="default libvirt URI for jobs that do not name one (overrides libvirt_uri of the "
        "configuration file)",
    )
    parser.add_argument(
        "--work-dir",
        metavar="DIR",
        help="directory for the jobs' temporary overlays, one subdirectory per job, removed when "
        "the job ends (overrides work_dir of the configuration file)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory of the job store (jobs.sqlite3), created 0700 if missing "
        "(overrides state_dir of the configuration file)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level (default: info)",
    )
    parser.add_argument("--version", action="version", version=f"vm2kvmd {__version__}")
    return parser.parse_args(argv)


def effective_config(args: argparse.Namespace, config: DaemonConfig) -> DaemonConfig:
    """The file's configuration with the command-line flags applied over it."""
    changes = {"libvirt_uri": args.connect, "work_dir": args.work_dir, "state_dir": args.state_dir}
    return replace(config, **{k: v for k, v in changes.items() if v is not None})


def job_defaults(config: DaemonConfig) -> MigrateOptions:
    """The options a job starts from before the caller's ``a{sv}``."""
    return MigrateOptions(
        connect=config.libvirt_uri,
        work_dir=config.work_dir,
        default_pool=config.default_pool,
        default_network=config.default_network,
        disk_parallelism=config.disk_parallelism,
        libvirt_retry_seconds=config.libvirt_retry_seconds,
    )


async def serve(args: argparse.Namespace, config: DaemonConfig | None = None) -> int:
    config = effective_config(args, config or DaemonConfig())
    try:
        defaults = job_defaults(config)
        defaults.validate()
    except Vm2kvmError as exc:
        print(f"vm2kvmd: error: {exc.describe()}", file=sys.stderr)
        return 1
    try:
        store = await asyncio.to_thread(JobStore.open, config.state_dir)
    except StoreError as exc:
        print(f"vm2kvmd: error: {exc}", file=sys.stderr)
        return 1
    try:
        lock = _lock_state_dir(config.state_dir)
    except StartupError as exc:
        await asyncio.to_thread(store.close)
        print(f"vm2kvmd: error: {exc}", file=sys.stderr)
        return 1
    try:
        return await _serve_store(args, config, defaults, store)
    finally:
        await asyncio.to_thread(store.close)
        os.close(lock)


def _lock_state_dir(state_dir: str) -> int:
    """An exclusive lock on the state directory, held while the daemon runs.

    Recovery undoes the residues of every unfinished job, so it must never run
    while another vm2kvmd works on the same store (a second instance started by
    hand would otherwise destroy the first one's running jobs before it finds
    the bus name taken).
    """
    path = os.path.join(state_dir, "vm2kvmd.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartupError(f"cannot create {path}: {_reason(exc)}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StartupError(
            f"{state_dir} is in use by another vm2kvmd (lock {path} is held); stop it first"
        ) from exc
    return fd


async def _serve_store(
    args: argparse.Namespace, config: DaemonConfig, defaults: MigrateOptions, store: JobStore
) -> int:
    # Before the name is owned: no caller sees a job that is still being recovered.
    for line in await asyncio.to_thread(recover, store):
        log.info("%s", line)
    manager = Manager(
        defaults=defaults,
        store=store,
        max_parallel_jobs=config.max_parallel_jobs,
        host_disk_parallelism=config.host_disk_parallelism,
        job_retention=config.job_retention,
        connections_per_host=config.vsphere_connections_per_host,
    )
    await manager.load()
    daemon = Daemon(manager, bus=args.bus, config=config)
    try:
        await daemon.start()
    except StartupError as exc:
        print(f"vm2kvmd: error: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        clean = await daemon.run_until_stopped(stop)
        log.info("stopping" if clean else "stopping after losing the bus")
        await daemon.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return 0 if clean else 1


def log_handler(journal_socket: str = JOURNAL_SOCKET) -> logging.Handler:
    """journald when its socket exists (extra fields become journal fields), else stderr."""
    if os.path.exists(journal_socket):
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            pass  # python3-systemd missing: stderr, which systemd also puts in the journal
        else:
            journal: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="vm2kvmd")
            journal.setFormatter(logging.Formatter("%(message)s"))  # journald adds time and level
            return journal
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(STDERR_FORMAT))
    return stderr


def main(argv: Sequence[str] | None = None, *, journal_socket: str = JOURNAL_SOCKET) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"vm2kvmd: error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level.upper(), handlers=[log_handler(journal_socket)])
    return asyncio.run(serve(args, config))


if __name__ == "__main__":
    sys.exit(main())
