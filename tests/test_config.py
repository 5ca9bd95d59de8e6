"""The daemon's configuration file: parsing, every kind of invalid file, and vm2kvmd refusing one."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tests.service.test_daemon_process import finish, spawn
from vm2kvmd.config import ConfigError, DaemonConfig, load_config, parse_config
from vm2kvmd.daemon import effective_config, job_defaults, parse_args

REPO = Path(__file__).resolve().parents[1]
CONF = "/etc/vm2kvm/vm2kvmd.conf"


def test_empty_file_is_all_defaults() -> None:
    config = parse_config("", CONF)
    assert config == DaemonConfig()
    assert config.state_dir == "/var/lib/vm2kvm"
    assert config.work_dir == "/var/tmp/vm2kvm"
    assert (config.max_parallel_jobs, config.disk_parallelism) == (2, 2)
    assert (config.host_disk_parallelism, config.job_retention) == (4, 1000)
    assert (config.default_pool, config.default_network) == ("default", "default")
    assert config.libvirt_uri == "qemu:///system"
    assert config.vsphere_connections_per_host == 8


def test_every_key() -> None:
    text = """
        state_dir = "/srv/state"
        work_dir = "/srv/work"
        max_parallel_jobs = 4
        disk_parallelism = 1
        host_disk_parallelism = 3
        job_retention = 50
        default_pool = "images"
        default_network = "lan"
        libvirt_uri = "qemu+ssh://kvm1/system"
        vsphere_connections_per_host = 2
    """
    assert parse_config(text, CONF) == DaemonConfig(
        state_dir="/srv/state",
        work_dir="/srv/work",
        max_parallel_jobs=4,
        disk_parallelism=1,
        host_disk_parallelism=3,
        job_retention=50,
        default_pool="images",
        default_network="lan",
        libvirt_uri="qemu+ssh://kvm1/system",
        vsphere_connections_per_host=2,
    )


def test_the_shipped_example_parses_to_the_defaults_and_names_every_key() -> None:
    example = (REPO / "etc" / "vm2kvmd.conf.example").read_text()
    assert parse_config(example, "example") == DaemonConfig()
    settings = [line[2:] for line in example.splitlines() if re.match(r"# \w+ = ", line)]
    uncommented = "\n".join(settings)
    assert parse_config(uncommented, "example") == DaemonConfig()
    assert [line.split(" = ")[0] for line in settings] == list(DaemonConfig.__dataclass_fields__)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            'max_parallel_jobs = "x"',
            f"{CONF}: key max_parallel_jobs: must be an integer ≥ 1 (value 'x')",
        ),
        ("max_parallel_jobs = 0", f"{CONF}: key max_parallel_jobs: must be an integer ≥ 1 (value 0)"),
        ("disk_parallelism = -3", f"{CONF}: key disk_parallelism: must be an integer ≥ 1 (value -3)"),
        ("disk_parallelism = true", f"{CONF}: key disk_parallelism: must be an integer ≥ 1 (value true)"),
        ("disk_parallelism = 1.5", f"{CONF}: key disk_parallelism: must be an integer ≥ 1 (value 1.5)"),
        ("job_retention = 0", f"{CONF}: key job_retention: must be an integer ≥ 1 (value 0)"),
        (
            "vsphere_connections_per_host = 0",
            f"{CONF}: key vsphere_connections_per_host: must be an integer ≥ 1 (value 0)",
        ),
        (
            'host_disk_parallelism = "4"',
            f"{CONF}: key host_disk_parallelism: must be an integer ≥ 1 (value '4')",
        ),
        ('work_dir = "var/tmp"', f"{CONF}: key work_dir: must be an absolute path (value 'var/tmp')"),
        ("state_dir = 3", f"{CONF}: key state_dir: must be an absolute path (value 3)"),
        ('default_pool = ""', f"{CONF}: key default_pool: must be a non-empty string (value '')"),
        (
            'default_network = ["a", "b"]',
            f"{CONF}: key default_network: must be a non-empty string (value ['a', 'b'])",
        ),
        ("[libvirt_uri]\nx = 1", f"{CONF}: key libvirt_uri: must be a non-empty string (value a table)"),
        (
            'pool = "images"',
            f"{CONF}: key pool: unknown key (known: state_dir, work_dir, max_parallel_jobs, "
            "disk_parallelism, host_disk_parallelism, job_retention, default_pool, default_network, "
            "libvirt_uri, libvirt_retry_seconds, vsphere_connections_per_host) (value 'images')",
        ),
    ],
)
def test_invalid_value_names_file_key_and_value(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, CONF)
    assert str(exc.value) == line
    assert "\n" not in str(exc.value)


def test_not_toml() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("max_parallel_jobs 3\n", CONF)
    assert str(exc.value).startswith(f"{CONF}: not valid TOML: ")
    assert "line 1" in str(exc.value) and "\n" not in str(exc.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(str(tmp_path / "nope.conf"))
    assert str(exc.value) == f"{tmp_path / 'nope.conf'}: no such file"


def test_missing_default_file_is_all_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("vm2kvmd.config.DEFAULT_CONFIG_PATH", str(tmp_path / "absent.conf"))
    assert load_config(None) == DaemonConfig()


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_bytes(b'default_pool = "\xff"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(str(path))
    assert str(exc.value).startswith(f"{path}: not valid TOML: not UTF-8")


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vm2kvmd.conf"
    path.write_text("disk_parallelism = 3\n")
    assert load_config(str(path)).disk_parallelism == 3


def test_flags_override_the_file_and_reach_the_job_defaults() -> None:
    config = DaemonConfig(
        work_dir="/srv/work",
        libvirt_uri="qemu:///session",
        default_pool="images",
        default_network="lan",
        disk_parallelism=3,
    )
    merged = effective_config(parse_args(["--connect", "test:///default"]), config)
    assert merged.libvirt_uri == "test:///default"
    assert merged.work_dir == "/srv/work"
    defaults = job_defaults(merged)
    assert (defaults.connect, defaults.work_dir) == ("test:///default", "/srv/work")
    assert (defaults.default_pool, defaults.effective_pool, defaults.default_network) == (
        "images",
        "images",
        "lan",
    )
    assert defaults.disk_parallelism == 3
    # The caller's pool still wins, and output-dir still means no pool at all.
    assert defaults.__class__.from_mapping({"pool": "fast"}, defaults).effective_pool == "fast"
    assert defaults.__class__.from_mapping({"output-dir": "/out"}, defaults).effective_pool is None
    args = parse_args(["--config", "/x.conf", "--work-dir", "/w"])
    assert isinstance(args, argparse.Namespace) and args.config == "/x.conf"
    assert effective_config(args, config).work_dir == "/w"
    assert effective_config(args, config).state_dir == config.state_dir


def test_state_dir_flag_overrides_the_file() -> None:
    config = DaemonConfig(state_dir="/srv/state")
    assert effective_config(parse_args([]), config).state_dir == "/srv/state"
    assert effective_config(parse_args(["--state-dir", "/tmp/s"]), config).state_dir == "/tmp/s"


async def test_daemon_exits_1_with_one_line_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_parallel_jobs = 'x'\n")
    # The file is read before the bus is touched: no bus needed.
    proc = await spawn(
        "DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent", "--bus", "session", "--config", str(bad)
    )
    status, err = await finish(proc)
    assert status == 1
    assert err == f"vm2kvmd: error: {bad}: key max_parallel_jobs: must be an integer ≥ 1 (value 'x')\n"


async def test_daemon_exits_1_when_the_given_file_is_missing(tmp_path: Path) -> None:
    proc = await spawn(
        "DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent", "--config", str(tmp_path / "nope.toml")
    )
    status, err = await finish(proc)
    assert (status, err) == (1, f"vm2kvmd: error: {tmp_path / 'nope.toml'}: no such file\n")
