"""virt-v2v's option spellings in vm2kvmctl (issue 12): ``-os``, ``-of``, ``-on``, and
``--bridge``/``--network`` as ``IN:OUT`` or a bare target for every other network.

Run as a user runs them, against vm2kvmd on a private bus; Inspect plans for real
(the test libvirtd, a real pool) so the domain XML shows where each option went.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from testbed.services import DirPool
from tests.cli.test_cli import assert_one_error_line, ctl
from tests.service.support import ScriptedRunner, serve_daemon
from vm2kvmctl.main import build_parser, network_entry
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.service.runner import pipeline_inspector

pytestmark = pytest.mark.libvirt

# Two NICs: ethernet0 on an NSX segment (no networkName: named by its id), ethernet1 on "Mgmt-VLAN20".
VMX = Path(__file__).resolve().parents[1] / "data" / "vmx" / "esxi-nsx-ubuntu.vmx"


def interfaces(xml: str) -> list[tuple[str, str]]:
    """(type, bridge or network) of each <interface>."""
    root = etree.fromstring(xml.encode())
    found = root.xpath(
        "devices/interface/@type | devices/interface/source/@bridge | devices/interface/source/@network"
    )
    return [(str(kind), str(target)) for kind, target in zip(found[::2], found[1::2], strict=True)]


async def test_v2v_spellings_reach_the_plan(
    private_bus: str, libvirt_conn: Any, dir_pool: DirPool, test_network: str
) -> None:
    async with serve_daemon(private_bus, inspector=pipeline_inspector):
        run = await ctl(
            private_bus,
            "inspect",
            str(VMX),
            "-os",
            dir_pool.name,
            "-of",
            "raw",
            "-on",
            "web-v2v",
            "--bridge",
            "br-all",
            "--network",
            f"Mgmt-VLAN20:{test_network}",
            "--json",
        )
    assert run.status == 0, run.err
    data = run.json()
    assert data["name"] == "web-v2v"
    (disk,) = data["disks"]
    assert disk["target"]["format"] == "raw"
    assert disk["target"]["path"] == f"{dir_pool.path}/web-v2v-disk1.img"
    assert interfaces(data["domain_xml"]) == [("bridge", "br-all"), ("network", test_network)]
    # The user mapped every network: no "has no --network/--bridge mapping" note.
    assert not [n for n in data["notes"] if "mapping" in n]


async def test_migrate_sends_the_v2v_spellings_as_options(private_bus: str) -> None:
    runner = ScriptedRunner(steps=2)
    async with serve_daemon(private_bus, runner=runner):
        run = await ctl(
            private_bus,
            "migrate",
            "/vms/a.vmx",
            "-os",
            "fast",
            "-of",
            "raw",
            "-on",
            "web",
            "--network",
            "default",
            "--network",
            "VM Network:prod",
            "--bridge",
            "DMZ=br-dmz",
            "--bridge",
            "VLAN:30=br30",  # our form wins when there is an "=": a colon in the VMware name
        )
    assert run.status == 0, run.err
    ((_, options),) = runner.calls
    assert (options.pool, options.format, options.name) == ("fast", "raw", "web")
    assert options.networks == (("VM Network", "prod"),)
    assert options.bridges == (("DMZ", "br-dmz"), ("VLAN:30", "br30"))
    assert options.other_networks == ("network", "default")
    # What the job store keeps, and retry reads back.
    assert MigrateOptions.from_mapping(options.to_mapping()) == options


async def test_two_targets_for_every_other_network_are_refused(private_bus: str) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=2)):
        run = await ctl(private_bus, "migrate", "/vms/a.vmx", "--bridge", "br0", "--network", "default")
    assert run.status == 1
    assert_one_error_line(
        run, "key bridge: option bridge maps every other network again (already to 'default') (value 'br0')"
    )


@pytest.mark.parametrize("command", ["inspect", "migrate"])
def test_short_spellings_are_exact_and_abbreviations_stay_unambiguous(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    args = parser.parse_args([command, "/vms/a.vmx", "-os", "p", "-of", "qcow2", "-on", "n"])
    assert (args.pool, args.format, args.name) == ("p", "qcow2", "n")
    # "-o" could be any of the three: argparse refuses it rather than guessing.
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "/vms/a.vmx", "-o", "p"])
    assert exit_info.value.code == 2
    assert "ambiguous option: -o could match" in capsys.readouterr().err
    # "-osfast" is not "-os fast", and "-os" is not a cluster of "-o" and "-s".
    with pytest.raises(SystemExit):
        parser.parse_args([command, "/vms/a.vmx", "-osfast"])
    capsys.readouterr()
    # The long abbreviations users already type keep working.
    args = parser.parse_args([command, "/vms/a.vmx", "--br", "br0", "--netw", "a:b", "--po", "p"])
    assert (args.bridge, args.network, args.pool) == (["br0"], ["a:b"], "p")


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("br0", "br0"),
        ("VM Network:br0", "VM Network=br0"),
        ("a:b:c", "a=b:c"),  # the first colon, as virt-v2v splits
        ("VLAN:30=br30", "VLAN:30=br30"),
        ("VM Network=default", "VM Network=default"),
    ],
)
def test_network_entry(text: str, sent: str) -> None:
    assert network_entry(text) == sent
