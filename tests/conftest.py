"""Shared pytest configuration: options and fixtures used across the suite.

Services are real (dbus-daemon, libvirtd, qemu-img); see ``testbed/services.py``.
Every test is checked for leaked child processes, and every async test for
leaked asyncio tasks.  Domains and pools named ``vm2kvm-test-<token>-*`` by this
session that are still defined at the end are removed and fail the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import libvirt
import pytest
import pytest_asyncio
from blockbuster import blockbuster_ctx

# libguestfs under TCG (nested KVM is unreliable here, docs/development.md); set before any handle.
os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")

from testbed.services import (
    DEFAULT_URI,
    DefinedNetwork,
    DirPool,
    LibvirtdGuard,
    LiveConnection,
    PrivateBus,
    child_pids,
    describe_pids,
    ensure_libvirtd,
    leftover_test_domains,
    leftover_test_pools,
    remove_domain,
    service_pids,
    unique_name,
)
from tests.service.support import BusClient

pytest_plugins = ["tests.guests.fixtures", "tests.guests.phony_fixtures"]

# A service that needs longer than this to answer is worth a look.
LIBVIRTD_START_WARN_SECONDS = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regenerate",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


@pytest.fixture
def regenerate(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--regenerate"))


# --- services ---------------------------------------------------------------

_service_report: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _service_report:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[LibvirtdGuard]:
    """A libvirtd answering on qemu:///system: the running one, or one we start (and stop)."""
    guard = ensure_libvirtd(DEFAULT_URI)
    _service_report.append(
        f"libvirtd: started for this session in {guard.startup_seconds:.1f} s (pids {guard.pids})"
        if guard.started
        else "libvirtd: using the one already running"
    )
    if guard.started and guard.startup_seconds > LIBVIRTD_START_WARN_SECONDS:
        warnings.warn(f"libvirtd took {guard.startup_seconds:.1f} s to start", stacklevel=1)
    yield guard
    guard.stop()


@pytest.fixture(scope="session")
def libvirt_conn(libvirtd: LibvirtdGuard) -> Iterator[Any]:
    """A connection to qemu:///system for the session; checks for leftovers at the end.

    A ``LiveConnection``: if the libvirtd goes away between tests (someone else
    stopped the one we found), the next use reconnects, starting our own.
    """
    conn = LiveConnection(libvirtd.uri)
    yield conn
    domains = leftover_test_domains(conn)
    pools = leftover_test_pools(conn)
    for name in domains:
        with contextlib.suppress(libvirt.libvirtError):
            remove_domain(conn, name)
    for name in pools:
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName(name)
            if pool.isActive():
                pool.destroy()
            pool.undefine()
    if conn.reconnects:
        _service_report.append(
            f"libvirtd: went away {conn.reconnects} time(s) during the session; reconnected"
            + (f", started our own (pids {[p for g in conn.guards for p in g.pids]})" if conn.guards else "")
        )
    conn.stop()  # closes, and stops the libvirtds it had to start
    if domains or pools:
        pytest.fail(
            f"tests left libvirt objects defined (now removed): domains {domains}, pools {pools}",
            pytrace=False,
        )


@pytest.fixture
def dir_pool(libvirt_conn: Any) -> Iterator[DirPool]:
    """A fresh running ``dir`` pool; ``.name`` and ``.path``.  Removed after the test."""
    with DirPool(libvirt_conn) as pool:
        yield pool


@pytest.fixture
def test_network(libvirt_conn: Any) -> Iterator[str]:
    """The name of a defined (inactive) libvirt network, removed after the test."""
    with DefinedNetwork(libvirt_conn) as net:
        yield net.name


@pytest.fixture
def domain_name() -> str:
    """A domain name the end-of-session safety net recognises as this session's."""
    return unique_name("dom")


@pytest.fixture(scope="session")
def private_bus() -> Iterator[str]:
    """The address of a private session-style dbus-daemon."""
    with PrivateBus() as bus:
        yield bus.address


@pytest.fixture
async def client(private_bus: str) -> AsyncIterator[BusClient]:
    """A connection to the private bus that records vm2kvmd's job and manager signals."""
    bus_client = await BusClient.connect(private_bus)
    await bus_client.subscribe()
    yield bus_client
    await bus_client.close()


# --- leak checks ------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a child process behind (running or unreaped)."""
    before = child_pids()
    if inspect.iscoroutinefunction(getattr(request, "function", None)):
        # Set up here, so it is torn down after the test's other fixtures.
        request.getfixturevalue("_no_leaked_tasks")
        request.getfixturevalue("_no_blocking_calls")
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = child_pids() - before - service_pids()
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if leaked:
        description = describe_pids(leaked)
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        pytest.fail(f"test leaked child processes: {description}", pytrace=False)


@pytest.fixture
def _no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an async test in which our own code blocks the event loop (file I/O,
    sleeps, subprocess waits...); test code itself may block, except when our
    code calls it back (progress callbacks): mark such a test ``allow_blocking``."""
    if request.node.get_closest_marker("allow_blocking"):
        yield
        return
    with blockbuster_ctx(["vm2kvmd", "vm2kvmctl"]):
        yield


@pytest_asyncio.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves asyncio tasks running."""
    yield
    current = asyncio.current_task()
    # Let tasks that are finishing (a cancelled task's last step) finish.
    for _ in range(20):
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if leaked:
        names = [f"{t.get_name()} {t.get_coro()!r}" for t in leaked]
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test leaked asyncio tasks: {names}", pytrace=False)
