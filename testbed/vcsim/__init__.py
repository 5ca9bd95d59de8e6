"""VMware's vSphere API simulator (govmomi's ``simulator`` package), built once and run per test.

``build_vcsim()`` compiles ``main.go`` beside this file against Debian's
golang-github-vmware-govmomi-dev (offline, about 20 s) into ``build/vcsim/<key>/vcsim``; the key
covers the Go source, the Go version and the govmomi package version, so a cached binary is rebuilt
only when one of them changes.  ``Vcsim`` runs it in ``esx`` (a standalone ESXi: datacenter
``ha-datacenter``, datastore ``LocalDS_0``, VMs ``ha-host_VM0``/``ha-host_VM1``) or ``vpx`` (a
vCenter) mode, TLS on, on 127.0.0.1 only, and stops it by PID.  Login is ``user``/``pass``.

``Vcsim.set_tools`` and ``Vcsim.ignore_shutdown`` play a guest's part, which the simulator has no
API for: VMware Tools running in a VM, a guest that ignores a shutdown request (main.go's
``control``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from testbed.processes import register_service, stop_process

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).resolve().parent / "main.go"
GOPATH = "/usr/share/gocode"
GOVMOMI_DIR = Path(GOPATH) / "src/github.com/vmware/govmomi"
DEFAULT_CACHE_DIR = REPO / "build" / "vcsim"

USER = "user"
PASSWORD = "pass"  # the simulator's fixed login; not a secret
START_TIMEOUT = 30.0


def _package_version(name: str) -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "unknown"


def cache_key() -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    for package in ("golang-go", "golang-github-vmware-govmomi-dev"):
        digest.update(f"{package}={_package_version(package)}".encode())
    return digest.hexdigest()[:16]


def build_vcsim(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """The simulator binary, built when no cached one matches ``cache_key()``."""
    if not GOVMOMI_DIR.is_dir():
        raise RuntimeError(
            f"{GOVMOMI_DIR} is missing: apt-get install golang-go golang-github-vmware-govmomi-dev "
            "(scripts/setup.sh installs them)"
        )
    binary = cache_dir / cache_key() / "vcsim"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vcsim-build-", dir=binary.parent) as work:
        partial = Path(work) / "vcsim"
        env = {
            **os.environ,
            "GOPATH": GOPATH,
            "GO111MODULE": "off",
            "GOCACHE": str(Path(work) / "gocache"),
            "GOFLAGS": "",
        }
        result = subprocess.run(
            ["go", "build", "-o", str(partial), "."],
            cwd=SOURCE.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"building the vSphere simulator failed:\n{result.stderr[-3000:]}")
        os.replace(partial, binary)  # atomic: a concurrent build never sees half a binary
    return binary


@dataclass(frozen=True)
class VcsimInfo:
    """What the running simulator printed: its SDK URL and its TLS certificate."""

    url: str
    thumbprint: str  # SHA-256 of the certificate, colon-separated upper-case hex
    ca_file: str  # the certificate as PEM (self-signed: it is its own CA)
    mode: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443


class Vcsim:
    """A running simulator; use as a context manager (stopped by PID, its files removed)."""

    def __init__(self, mode: str = "esx", binary: Path | None = None, *, password: str = PASSWORD) -> None:
        if mode not in ("esx", "vpx"):
            raise ValueError(f"mode must be esx or vpx, not {mode!r}")
        self.mode = mode
        self.binary = binary
        self.password = password  # the login's password (``PASSWORD`` unless a test needs its own)
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: VcsimInfo | None = None
        self._pending = b""  # stdout read past the last line

    def start(self) -> VcsimInfo:
        binary = self.binary or build_vcsim()
        self.proc = subprocess.Popen(
            [str(binary), "-mode", self.mode],
            env={**os.environ, "VCSIM_PASSWORD": self.password},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        register_service(self.proc.pid)
        try:
            self.info = self._read_info()
        except BaseException:
            self.stop()
            raise
        return self.info

    def _read_line(self) -> dict[str, str]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise RuntimeError(f"the vSphere simulator printed nothing within {START_TIMEOUT:.0f} s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"the vSphere simulator exited: {err[-2000:]}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        fields: dict[str, str] = json.loads(line)
        return fields

    def _read_info(self) -> VcsimInfo:
        fields = self._read_line()
        return VcsimInfo(fields["url"], fields["thumbprint"], fields["ca_file"], fields["mode"])

    def _control(self, *words: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None, "the simulator is not running"
        self.proc.stdin.write((" ".join(words) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._read_line()
        if "error" in answer:
            raise RuntimeError(f"simulator control {' '.join(words)!r}: {answer['error']}")

    def opaque_network(self, vm: str, name: str, ident: str) -> None:
        """An NSX segment ``name`` (opaqueNetworkId ``ident``) in ``vm``'s network list, as a host
        lists the segment of a NIC given an opaque backing (the simulator cannot)."""
        self._control("opaque-network", vm, name, ident)

    def set_tools(self, vm: str, status: str = "guestToolsRunning") -> None:
        """Set ``guest.toolsRunningStatus`` of ``vm`` (every simulated VM starts without Tools)."""
        self._control("tools", vm, status)

    def ignore_shutdown(self, vm: str) -> None:
        """From now on the guest of ``vm`` ignores ``ShutdownGuest`` (a hard power-off still works)."""
        self._control("ignore-shutdown", vm)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()  # main.go ends when its stdin closes
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            stop_process(self.proc)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            self.proc = None
        if self.info is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.info.ca_file)

    def kill(self) -> None:
        """SIGKILL, as a host that disappears (tests of mid-transfer failures)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def __enter__(self) -> VcsimInfo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
