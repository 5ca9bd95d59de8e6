"""Cockpit and a browser for tests and screenshots: a real ``cockpit-ws`` and Debian's Chromium.

``CockpitWs`` runs ``cockpit-ws --local-session=cockpit-bridge`` (Cockpit 287,
Debian 12): no systemd, no login, no TLS; the bridge runs as this process's user
and takes ``DBUS_SYSTEM_BUS_ADDRESS`` as its system bus, so a page's
``cockpit.dbus(NAME, {bus: "system"})`` reaches the test's private dbus-daemon.
Packages are symlinked into ``$XDG_DATA_HOME/cockpit/`` of a temp home (the
bridge reads ``~/.local/share/cockpit/`` next to ``/usr/share/cockpit/``); the
bridge lists packages when it starts, so a package must be in place before.

``Browser`` is headless Chromium driven by Selenium through Debian's
chromium-driver.  Both register their PIDs as services (the leak check of the
test suite tells them from leaked children) and are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from testbed.processes import register_service, stop_process, tail

COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
COCKPIT_BRIDGE = "/usr/bin/cockpit-bridge"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

LIBVIRT_DBUS = "/usr/sbin/libvirt-dbus"

__all__ = ["CHROMIUM", "COCKPIT_WS", "LIBVIRT_DBUS", "Browser", "CockpitWs", "LibvirtDbus", "cockpit_missing"]


def cockpit_missing() -> str:
    """Why Cockpit and a browser cannot run here ("" when they can): for skip messages."""
    missing = [p for p in (COCKPIT_WS, COCKPIT_BRIDGE, CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (scripts/setup.sh installs it into .venv)"
    return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CockpitWs:
    """``cockpit-ws`` on 127.0.0.1 with a local session whose system bus is ``system_bus``.

    ``packages`` maps a Cockpit package name to its directory (with
    ``manifest.json``).  ``url(package)`` is the page alone, as Cockpit's shell
    frames it; ``shell_url(package)`` is the page inside Cockpit's shell (menu,
    header), for screenshots and the menu entry.

    ``user`` (when this process is root): run cockpit-ws, and so the bridge and
    every D-Bus call of the page, as that user, as a logged-in user without
    administrative access is.  The packages are then copied into the temp home
    (the user may not be able to read where they were built).
    """

    def __init__(
        self,
        system_bus: str,
        packages: Mapping[str, str | os.PathLike[str]] = {},
        *,
        env: Mapping[str, str] = {},
        user: str | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.system_bus = system_bus
        self.packages = {name: Path(path).resolve() for name, path in packages.items()}
        self.extra_env = dict(env)
        self.user = user
        self.start_timeout = start_timeout
        self.port = 0
        self.home: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, package: str, page: str = "index.html") -> str:
        return f"{self.base}/cockpit/@localhost/{package}/{page}"

    def shell_url(self, package: str) -> str:
        return f"{self.base}/{package}"

    @property
    def log(self) -> Path:
        assert self.home is not None
        return self.home / "cockpit-ws.log"

    def start(self) -> CockpitWs:
        self.home = Path(tempfile.mkdtemp(prefix="vm2kvm-cockpit-"))
        data = self.home / ".local" / "share"
        (data / "cockpit").mkdir(parents=True)
        for name, path in self.packages.items():
            if not (path / "manifest.json").is_file():
                raise RuntimeError(f"{path} is no Cockpit package: it has no manifest.json")
            if self.user is None:
                (data / "cockpit" / name).symlink_to(path, target_is_directory=True)
            else:
                shutil.copytree(path, data / "cockpit" / name)
        if self.user is not None:
            for item in [self.home, *self.home.rglob("*")]:
                shutil.chown(item, self.user, _group_of(self.user))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "XDG_"))}
        env |= {
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(data),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_RUNTIME_DIR": str(self.home),
            "DBUS_SYSTEM_BUS_ADDRESS": self.system_bus,
            # The machines have no en_US locale; the bridge warns once per start without this.
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        env |= self.extra_env
        self.port = _free_port()
        argv = [COCKPIT_WS, f"--local-session={COCKPIT_BRIDGE}", "--port", str(self.port), "-a", "127.0.0.1"]
        as_user: dict[str, Any] = {}
        if self.user is not None:
            as_user = {"user": self.user, "group": _group_of(self.user), "extra_groups": []}
        try:
            self._proc = subprocess.Popen(
                argv,
                **as_user,
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.log.open("wb"),
                start_new_session=True,
            )
            register_service(self._proc.pid)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"cockpit-ws exited with status {self._proc.returncode}: {tail(self.log)}")
            try:
                with urllib.request.urlopen(f"{self.base}/cockpit/static/login.html", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cockpit-ws did not answer within {self.start_timeout:.0f} s: {tail(self.log)}"
                )
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def stop(self) -> None:
        # The bridge is ws's child in its own process group; ws ends it on SIGTERM.
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def __enter__(self) -> CockpitWs:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


class LibvirtDbus:
    """``libvirt-dbus --system`` on a private bus: libvirt as cockpit-machines reads it (``org.libvirt``).

    It owns ``org.libvirt`` on ``system_bus`` and talks to the real libvirtd
    (``qemu:///system``); stopped by its PID.
    """

    def __init__(self, system_bus: str, *, start_timeout: float = 20.0) -> None:
        self.system_bus = system_bus
        self.start_timeout = start_timeout
        self.log: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LibvirtDbus:
        from testbed.bus import ask_bus_driver

        self.log = Path(tempfile.mkstemp(prefix="vm2kvm-libvirt-dbus-", suffix=".log")[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.system_bus
        self._proc = subprocess.Popen(
            [LIBVIRT_DBUS, "--system"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            start_new_session=True,
        )
        register_service(self._proc.pid)
        deadline = time.monotonic() + self.start_timeout
        while ask_bus_driver(self.system_bus, "NameHasOwner", "string:org.libvirt") != ["boolean", "true"]:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = tail(self.log)
                self.stop()
                raise RuntimeError(f"libvirt-dbus did not own org.libvirt: {log}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None
        if self.log is not None:
            self.log.unlink(missing_ok=True)
            self.log = None

    def __enter__(self) -> LibvirtDbus:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


class Browser:
    """Headless Chromium under Selenium; ``driver`` is the ``selenium.webdriver.Chrome``.

    As root Chromium needs ``--no-sandbox``.  The window size fixes the layout
    (and the screenshots) whatever the machine.
    """

    def __init__(self, *, width: int = 1400, height: int = 900) -> None:
        self.width = width
        self.height = height
        self.profile: Path | None = None
        self._driver: Any = None

    @property
    def driver(self) -> Any:
        if self._driver is None:
            raise RuntimeError("the browser is not running")
        return self._driver

    def start(self) -> Browser:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="vm2kvm-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        options.add_argument("--headless=new")
        if os.geteuid() == 0:
            options.add_argument("--no-sandbox")
        for arg in (
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={self.width},{self.height}",
            f"--user-data-dir={self.profile}",
            "--lang=en-US",
            "--no-first-run",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(CHROMEDRIVER, log_output=str(self.profile / "chromedriver.log"))
        try:
            self._driver = webdriver.Chrome(options=options, service=service)
        except BaseException:
            self.stop()
            raise
        if service.process is not None:
            register_service(service.process.pid)
        return self

    def console(self) -> list[str]:
        """The page's console messages since the last call (errors of the page's JavaScript)."""
        return [f"{e['level']}: {e['message']}" for e in self.driver.get_log("browser")]

    def stop(self) -> None:
        if self._driver is not None:
            service = self._driver.service
            with contextlib.suppress(Exception):
                self._driver.quit()
            if service.process is not None:
                stop_process(service.process, timeout=10)
            self._driver = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
