"""The Cockpit page's package (cockpit/): its build, what it is built into, its desktop entry.

The page in a real browser is tested in tests/cockpit/; these check what is true without one.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from vm2kvmd import constants

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts/build-cockpit.sh"
PAGE = REPO / "build/cockpit/vm2kvm"
SRC = REPO / "cockpit/src"

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="needs node and npm (scripts/setup.sh)",
)


def build(repo: Path) -> str:
    """Run the build script of ``repo``; its output (empty when nothing was rebuilt)."""
    done = subprocess.run(
        [str(repo / "scripts/build-cockpit.sh")], check=True, capture_output=True, text=True, timeout=600
    )
    return done.stdout


@pytest.fixture(scope="module")
def page() -> Path:
    build(REPO)
    return PAGE


@needs_node
def test_build_makes_a_cockpit_package(page: Path) -> None:
    manifest = json.loads((page / "manifest.json").read_text())
    assert manifest["menu"]["index"]["label"] == "VMware import"
    html = (page / "index.html").read_text()
    # The installed cockpit's cockpit.js, then the bundle; both relative to the package.
    assert re.findall(r'<script src="([^"]+)"', html) == ["../base1/cockpit.js", "index.js"]
    assert '<link rel="stylesheet" href="index.css">' in html
    script = (page / "index.js").read_text()
    assert constants.BUS_NAME in script
    assert "VMware import" in script
    css = (page / "index.css").read_text()
    assert ".pf-v5-c-table" in css
    # Every asset the CSS names was written next to it.
    for asset in set(re.findall(r"url\(\"?\./(assets/[^)\"]+)", css)):
        assert (page / asset).is_file(), asset


def test_page_uses_the_daemon_names() -> None:
    """The names in the page's D-Bus module are vm2kvmd's (vm2kvmd/constants.py)."""
    source = (SRC / "dbus.js").read_text()
    names = dict(re.findall(r"export const (\w+) = '([^']*)';", source))
    assert names == {
        "BUS_NAME": constants.BUS_NAME,
        "MANAGER_PATH": constants.MANAGER_PATH,
        "MANAGER_IFACE": constants.MANAGER_IFACE,
        "JOB_IFACE": constants.JOB_IFACE,
        "JOBS_PATH": constants.JOBS_PATH,
    }


@needs_node
def test_build_runs_only_when_something_changed(tmp_path: Path, page: Path) -> None:
    # A copy of the page's sources whose dependencies are the repository's (already installed).
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(BUILD_SCRIPT, copy / "scripts")
    shutil.copytree(REPO / "cockpit", copy / "cockpit", ignore=shutil.ignore_patterns("node_modules"))
    (copy / "build/cockpit").mkdir(parents=True)
    (copy / "build/cockpit/npm").symlink_to(REPO / "build/cockpit/npm")

    assert "npm ci" not in build(copy)  # the lock is the installed one
    built = copy / "build/cockpit/vm2kvm/index.css"
    first = built.stat().st_mtime_ns
    assert build(copy) == ""
    assert built.stat().st_mtime_ns == first

    with (copy / "cockpit/src/app.css").open("a") as css:
        css.write(".vm2kvm-test-marker { color: red; }\n")
    assert "esbuild" in build(copy)
    assert ".vm2kvm-test-marker" in built.read_text()


def desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "data/vm2kvm.desktop")
    return parser["Desktop Entry"]


def test_desktop_entry_opens_the_page_in_cockpit_desktop() -> None:
    entry = desktop_entry()
    manifest = json.loads((SRC / "manifest.json").read_text())
    # cockpit-desktop takes the page's URL path; the package directory is the one make installs.
    assert entry["Exec"] == "/usr/lib/cockpit/cockpit-desktop /cockpit/@localhost/vm2kvm/index.html"
    assert entry["Name"] == manifest["menu"]["index"]["label"]
    assert "index" in manifest["menu"]


COCKPIT_DESKTOP = Path("/usr/lib/cockpit/cockpit-desktop")

# Stands in for the browser cockpit-desktop opens (its $BROWSER): fetches what a browser would,
# from inside cockpit-desktop's network namespace, and leaves it in OUT.
FAKE_BROWSER = """#!{python}
import sys, urllib.request
url = sys.argv[1]
base = url.rsplit("/", 2)[0]
for name, address in [("url", None), ("index.html", url), ("manifests.json", base + "/manifests.json")]:
    data = url.encode() if address is None else urllib.request.urlopen(address, timeout=20).read()
    with open("{out}/" + name, "wb") as f:
        f.write(data)
"""


@needs_node
@pytest.mark.skipif(not COCKPIT_DESKTOP.exists(), reason="needs cockpit-ws (cockpit-desktop)")
def test_desktop_entry_serves_the_page_through_cockpit_desktop(tmp_path: Path, page: Path) -> None:
    """The entry's command, run as a desktop would, with the built package where Cockpit finds
    a user's packages: its own bridge and cockpit-ws serve the page and list it for the menu."""
    data = tmp_path / "data"
    (data / "cockpit").mkdir(parents=True)
    (data / "cockpit/vm2kvm").symlink_to(page)
    out = tmp_path / "out"
    out.mkdir()
    browser = tmp_path / "browser"
    browser.write_text(FAKE_BROWSER.format(python=sys.executable, out=out))
    browser.chmod(0o755)
    env = {**os.environ, "XDG_DATA_HOME": str(data), "BROWSER": str(browser)}
    done = subprocess.run(
        desktop_entry()["Exec"].split(),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "url").read_text().endswith("/cockpit/@localhost/vm2kvm/index.html")
    assert (out / "index.html").read_bytes() == (page / "index.html").read_bytes()
    manifests = json.loads((out / "manifests.json").read_text())
    assert manifests["vm2kvm"]["menu"]["index"]["label"] == "VMware import"


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="needs desktop-file-utils")
def test_desktop_entry_is_valid() -> None:
    done = subprocess.run(
        ["desktop-file-validate", str(REPO / "data/vm2kvm.desktop")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def introspected_methods(xml_file: str) -> set[str]:
    root = ET.parse(REPO / "dbus" / xml_file).getroot()
    return {m.get("name", "") for m in root.iter("method")}


def test_page_calls_only_methods_the_daemon_has() -> None:
    """Every Manager1/Job1 method the page names is in the introspection data
    (which tests/service/test_introspection.py checks against the running daemon)."""
    dbus_js = (SRC / "dbus.js").read_text()
    manager_calls = set(re.findall(r"MANAGER_IFACE, '(\w+)'", dbus_js))
    job_calls = set(re.findall(r"JOB_IFACE, '(\w+)'", dbus_js))
    for jsx in SRC.glob("*.jsx"):
        job_calls |= set(re.findall(r"run\('(\w+)'", jsx.read_text()))  # JobActions
    assert manager_calls == {"ListJobs", "Inspect", "Migrate", "ListPoolsAndNetworks"}
    assert job_calls == {"GetLog", "GetReport", "Cancel", "Retry", "Dismiss"}
    assert manager_calls <= introspected_methods("org.vm2kvm.Manager1.xml")
    assert job_calls <= introspected_methods("org.vm2kvm.Job1.xml")


# What the page computes without a browser: run its modules in node (bundled by the same esbuild).
HELPERS_PROBE = """
globalThis.window = { cockpit: { message: e => 'cockpit says ' + e.problem } };
const { bytes, duration, rateAndEta } = await import('./format.js');
const { variantOptions, describeError, jobNumber, plain } = await import('./dbus.js');
const { mappings, vmwareNetworks } = await import('./options.js');
const choices = { 'VM Network': 'network:lan', DMZ: 'bridge:br0', Backup: '' };
console.log(JSON.stringify({
    bytes: [bytes(0), bytes(1536), bytes(3 * 1024 ** 3)],
    duration: [duration(5), duration(65), duration(7325)],
    eta: rateAndEta({ State: 'running', Rate: 10485760, ExpectedEndTime: 1e6 * 100 }, 1000 * 40),
    eta_done: rateAndEta({ State: 'completed', Rate: 5, ExpectedEndTime: 1e6 * 100 }, 0),
    options: variantOptions({ name: '', pool: 'fast', format: 'raw', network: ['VM Network=lan'],
                              bridge: [], 'guest-conversion': false, verify: undefined }),
    denied: describeError({ name: 'org.vm2kvm.Error.NotAuthorized', message: 'not authorized' }),
    refused: describeError({ name: 'org.vm2kvm.Error.DomainExists', message: "domain 'web' exists" }),
    closed: describeError({ problem: 'disconnected' }),
    job: jobNumber('/org/vm2kvm/Daemon1/jobs/12'),
    networks: vmwareNetworks({ nics: [{ network: 'VM Network' }, { network: 'DMZ' },
                                      { network: 'VM Network' }, { network: null }] }),
    network_map: mappings(choices, 'network'),
    bridge_map: mappings(choices, 'bridge'),
    // Options in InterfacesAdded: a{sv} inside a variant, as cockpit's channel encodes it.
    job_options: plain({ t: 'a{sv}', v: { pool: { t: 's', v: 'fast' }, network: { t: 'as', v: ['a=b'] },
                                          verify: { t: 'b', v: true } } }),
}));
"""


BUNDLE_PROBE = """
require(process.argv[1]).buildSync({
    stdin: { contents: process.argv[2], resolveDir: process.argv[3], loader: 'js' },
    bundle: true, format: 'esm', platform: 'node', outfile: process.argv[4], logLevel: 'error',
});
"""


def run_probe(tmp_path: Path, probe: str) -> Any:
    """What ``probe`` (a module importing the page's sources) prints, as JSON."""
    bundle = tmp_path / "probe.mjs"
    esbuild = REPO / "build/cockpit/npm/node_modules/esbuild"
    subprocess.run(
        ["node", "-e", BUNDLE_PROBE, str(esbuild), probe, str(SRC), str(bundle)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    done = subprocess.run(["node", str(bundle)], check=True, capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout)


@needs_node
def test_page_helpers(tmp_path: Path, page: Path) -> None:
    out = run_probe(tmp_path, HELPERS_PROBE)
    assert out["bytes"] == ["0 B", "1.5 KiB", "3.0 GiB"]
    assert out["duration"] == ["5 s", "1 min 5 s", "2 h 2 min"]
    assert out["eta"] == "10.0 MiB/s, 1 min 0 s left"
    assert out["eta_done"] == ""
    # Only what the user set, with the D-Bus types Migrate expects (docs/dbus-api.md, Options).
    assert out["options"] == {
        "pool": {"t": "s", "v": "fast"},
        "format": {"t": "s", "v": "raw"},
        "network": {"t": "as", "v": ["VM Network=lan"]},
        "guest-conversion": {"t": "b", "v": False},
    }
    assert out["denied"]["code"] == "NotAuthorized"
    assert "administrative access" in out["denied"]["hint"]
    assert out["refused"] == {"code": "DomainExists", "message": "domain 'web' exists", "hint": ""}
    assert out["closed"]["code"] == "disconnected"
    assert out["closed"]["hint"] == "cockpit says disconnected"
    assert out["job"] == 12
    assert out["networks"] == ["VM Network", "DMZ"]
    # A per-network choice becomes a network or a bridge mapping; "" keeps the daemon's default.
    assert out["network_map"] == ["VM Network=lan"]
    assert out["bridge_map"] == ["DMZ=br0"]
    assert out["job_options"] == {"pool": "fast", "network": ["a=b"], "verify": True}


# The vSphere form's pure parts (vsphere.js): the URI and arguments vm2kvmctl gets, its errors.
VSPHERE_PROBE = """
globalThis.window = { cockpit: { message: e => 'cockpit says ' + e.problem } };
const v = await import('./vsphere.js');
const { sourceName } = await import('./format.js');
const tp = Array(32).fill('AB').join(':');
console.log(JSON.stringify({
    uris: [
        v.sourceUri({ uri: 'esx1.example.com', user: 'root', tls: 'verify' }),
        v.sourceUri({ uri: 'esx://admin@esx1:8443', user: 'root', tls: 'no-verify' }),
        v.sourceUri({ uri: 'esx://esx1/?no_verify=1', user: '', tls: 'no-verify' }),
        v.sourceUri({ uri: 'vpx://vc1/DC/Cluster/h1', user: 'administrator@vsphere.local', tls: 'pin' }),
        v.sourceUri({ uri: '  ', user: 'root', tls: 'verify' }),
    ],
    host: v.hostOf('esx://root@esx1:8443/?no_verify=1'),
    inspect_args: v.optionArgs({ name: '-web', pool: 'fast', network: ['VM Network=lan'], bridge: ['DMZ=br0'],
                                 'guest-conversion': false, verify: true, 'shutdown-source': true }),
    migrate_args: v.optionArgs({ format: 'raw', verify: true, 'shutdown-source': true, force: true },
                               { migrate: true }),
    named: v.ctlError({ exit_status: 1, message: 'vm2kvmctl: error: wrong' },
                      '{"error": {"name": "org.vm2kvm.Error.LoginFailed", "message": "refused the login"}}'),
    usage: v.ctlError({ exit_status: 2,
                        message: 'vm2kvmctl: error: --password-file -: stdin holds no password\\n' }, ''),
    missing: v.ctlError({ problem: 'not-found' }, ''),
    pin: v.serverThumbprint({ name: 'org.vm2kvm.Error.CertificateNotTrusted',
                             message: 'not trusted; its SHA-256 thumbprint is ' + tp.toLowerCase() }),
    no_pin: v.serverThumbprint({ name: 'org.vm2kvm.Error.LoginFailed', message: 'thumbprint is ' + tp }),
    job: v.isVsphereJob({ Source: 'esx://root@esx1/#web01' }) && !v.isVsphereJob({ Source: '/srv/a.vmx' }),
    names: [sourceName('vpx://admin@vc1/DC/h1?no_verify=1#web 01'), sourceName('/srv/vm/web.vmx')],
}));
"""


@needs_node
def test_vsphere_helpers(tmp_path: Path, page: Path) -> None:
    out = run_probe(tmp_path, VSPHERE_PROBE)
    assert out["uris"] == [
        "esx://root@esx1.example.com/",
        "esx://root@esx1:8443/?no_verify=1",  # the form's user replaces the URI's
        "esx://esx1/?no_verify=1",  # not twice
        "vpx://administrator%40vsphere.local@vc1/DC/Cluster/h1",
        "",
    ]
    assert out["host"] == "esx1:8443"
    # "--key=value": a name that starts with "-" stays a value; inspect has no power options.
    assert out["inspect_args"] == [
        "--name=-web", "--pool=fast", "--network=VM Network=lan", "--bridge=DMZ=br0", "--no-guest-conversion",
    ]  # fmt: skip
    assert out["migrate_args"] == ["--format=raw", "--verify", "--shutdown-source", "--force"]
    assert out["named"] == {"name": "org.vm2kvm.Error.LoginFailed", "message": "refused the login"}
    assert out["usage"] == {"message": "--password-file -: stdin holds no password", "exit_status": 2}
    assert "not installed" in out["missing"]["message"] and out["missing"]["problem"] == "not-found"
    assert out["pin"] == ":".join(["AB"] * 32)
    assert out["no_pin"] is None
    assert out["job"] is True
    assert out["names"] == ["web 01 on vc1", "web.vmx"]
