"""virtio-win driver selection and INF parsing, over fake trees with the ISO's real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.virtio_win import CURRENT_ISO, LEGACY_ISO, build_virtio_win, inf_text, listing
from testbed.virtio_win import DRIVERS as FAKE_DRIVERS
from tests.helpers.golden import check_golden
from vm2kvmd.core.guest.windows.inf import parse_inf
from vm2kvmd.core.guest.windows.virtio_win import (
    DriverFiles,
    DriverSelection,
    WindowsRelease,
    select_drivers,
    virtio_win_path,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

GOLDEN = Path(__file__).resolve().parents[3] / "data" / "windows" / "virtio_win_selection.txt"

RELEASES = {
    "XP SP3 32-bit": WindowsRelease(5, 1, 2600, False, "i386"),
    "Server 2003 64-bit": WindowsRelease(5, 2, 3790, True, "x86_64"),
    "Server 2008 32-bit": WindowsRelease(6, 0, 6002, True, "i386"),
    "Vista 64-bit": WindowsRelease(6, 0, 6002, False, "x86_64"),
    "7 32-bit": WindowsRelease(6, 1, 7601, False, "i386"),
    "7 64-bit": WindowsRelease(6, 1, 7601, False, "x86_64"),
    "Server 2008 R2": WindowsRelease(6, 1, 7601, True, "x86_64"),
    "8 32-bit": WindowsRelease(6, 2, 9200, False, "i386"),
    "Server 2012": WindowsRelease(6, 2, 9200, True, "x86_64"),
    "8.1 64-bit": WindowsRelease(6, 3, 9600, False, "x86_64"),
    "Server 2012 R2": WindowsRelease(6, 3, 9600, True, "x86_64"),
    "10 32-bit": WindowsRelease(10, 0, 19045, False, "i386"),
    "10 64-bit": WindowsRelease(10, 0, 19045, False, "x86_64"),
    "11 64-bit": WindowsRelease(10, 0, 22631, False, "x86_64"),
    "Server 2016": WindowsRelease(10, 0, 14393, True, "x86_64"),
    "Server 2019": WindowsRelease(10, 0, 17763, True, "x86_64"),
    "Server 2022": WindowsRelease(10, 0, 20348, True, "x86_64"),
    "Server 2025": WindowsRelease(10, 0, 26100, True, "x86_64"),
}


def pick(selection: DriverSelection, name: str) -> DriverFiles:
    driver = selection.get(name)
    assert driver is not None, f"{name} not selected"
    return driver


def _describe(tree: Path, layouts: tuple[str, ...], oses: tuple[tuple[str, str], ...]) -> str:
    root = build_virtio_win(tree, oses, layouts=layouts)
    files = listing(root)
    lines = []
    for label, release in RELEASES.items():
        selection = select_drivers(files, release)
        lines.append(f"{label}:")
        for driver in selection.drivers:
            lines.append(f"  {driver.name:9} {driver.os_dir:6} {' '.join(driver.files)}")
        lines.append(f"  agent     {selection.guest_agent_msi}")
        lines.extend(f"  note      {note}" for note in selection.notes)
    return "\n".join(lines) + "\n"


def test_selection_golden(tmp_path: Path, regenerate: bool) -> None:
    """Every release against the current ISO (both layouts, each alone) and an older tree."""
    text = "== current ISO, per-driver layout\n"
    text += _describe(tmp_path / "a", ("per-driver",), CURRENT_ISO)
    text += "== current ISO, mixed layout\n"
    text += _describe(tmp_path / "b", ("mixed",), CURRENT_ISO)
    text += "== legacy tree (XP/2003/2008) and current ISO, both layouts\n"
    text += _describe(tmp_path / "c", ("per-driver", "mixed"), (*LEGACY_ISO, *CURRENT_ISO))
    check_golden(GOLDEN, text, regenerate=regenerate, test_file=__file__)


def test_both_layouts_give_the_same_files_per_driver(tmp_path: Path) -> None:
    files = listing(build_virtio_win(tmp_path, CURRENT_ISO))
    selection = select_drivers(files, RELEASES["Server 2019"])
    assert [d.name for d in selection.drivers] == [
        "viostor",
        "vioscsi",
        "netkvm",
        "balloon",
        "vioserial",
        "viorng",
    ]
    viostor = selection.get("viostor")
    assert viostor is not None
    # Never a mix of the two copies: one directory per driver (the per-driver one, shallower or equal).
    assert viostor.files == (
        "viostor/2k19/amd64/viostor.cat",
        "viostor/2k19/amd64/viostor.inf",
        "viostor/2k19/amd64/viostor.sys",
    )
    assert viostor.file(".sys") == "viostor/2k19/amd64/viostor.sys"
    assert "Balloon/2k19/amd64/blnsvr.exe" in pick(selection, "balloon").files


def test_rpm_layout_one_level_deeper(tmp_path: Path) -> None:
    """Fedora's RPM: /usr/share/virtio-win/drivers/by-driver/... and by-os/..."""
    build_virtio_win(
        tmp_path / "drivers" / "by-driver", (("w10", "amd64"),), layouts=("per-driver",), guest_agent=False
    )
    build_virtio_win(
        tmp_path / "drivers" / "by-os", (("w10", "amd64"),), layouts=("mixed",), guest_agent=False
    )
    selection = select_drivers(listing(tmp_path), RELEASES["10 64-bit"])
    netkvm = selection.get("netkvm")
    assert netkvm is not None
    assert netkvm.files[0].startswith("drivers/by-driver/NetKVM/w10/amd64/")
    assert selection.guest_agent_msi is None


def test_x86_only_where_it_exists(tmp_path: Path) -> None:
    files = listing(build_virtio_win(tmp_path, CURRENT_ISO))
    # No 32-bit server drivers on a current ISO, and no 32-bit Windows 11.
    assert select_drivers(files, WindowsRelease(6, 0, 6002, True, "i386")).drivers == ()
    assert select_drivers(files, WindowsRelease(5, 1, 2600, False, "i386")).drivers == ()
    seven = select_drivers(files, RELEASES["7 32-bit"])
    assert pick(seven, "viostor").files[0] == "viostor/w7/x86/viostor.cat"
    assert seven.guest_agent_msi == "guest-agent/qemu-ga-i386.msi"


def test_missing_driver_is_left_out(tmp_path: Path) -> None:
    files = listing(build_virtio_win(tmp_path, (("2k19", "amd64"),), drivers=("netkvm", "balloon")))
    selection = select_drivers(files, RELEASES["Server 2019"])
    assert [d.name for d in selection.drivers] == ["netkvm", "balloon"]
    assert selection.get("viostor") is None


def test_path_order() -> None:
    assert virtio_win_path("/iso", "/env") == "/iso"
    assert virtio_win_path(None, "/env") == "/env"
    assert virtio_win_path(None, None) == "/usr/share/virtio-win"
    assert virtio_win_path(None, "") == "/usr/share/virtio-win"


@pytest.mark.parametrize("arch", ["amd64", "x86"])
def test_parse_inf_of_every_fake_driver(arch: str) -> None:
    for fake in FAKE_DRIVERS:
        inf = parse_inf(f"{fake.stem}.INF", inf_text(fake, arch))
        assert inf.name == f"{fake.stem}.inf"
        assert (inf.driver_class, inf.class_guid) == fake.driver_class
        assert inf.provider == "Red Hat, Inc."
        assert inf.date == (2024, 9, 5) and inf.version == (100, 95, 104, 26200)
        assert inf.driver_ver == "09/05/2024,100.95.104.26200"
        assert inf.catalog == f"{fake.stem}.cat"
        assert [(m.hardware_id, m.install_section) for m in inf.models] == [
            (f"PCI\\{pci}", fake.install) for pci in fake.pci_ids
        ]
        assert inf.models[0].description == fake.description


def test_parse_inf_comments_quotes_and_case() -> None:
    text = (
        "[version] ; lower case\n"
        "class = SCSIAdapter\n"
        "CLASSGUID={4d36e97b-e325-11ce-bfc1-08002be10318}\n"
        'Provider = "Acme; Inc."\n'
        "DriverVer = 1/2/2003\n"
        "[Manufacturer]\n%M%=M\n[M]\n%D%=inst,PCI\\VEN_1AF4&DEV_1001,PCI\\VEN_1AF4&DEV_1042\n"
        '[Strings]\nM="Acme"\nD="Disk"\n'
    )
    inf = parse_inf("x.inf", text)
    assert inf.provider == "Acme; Inc."
    assert inf.class_guid == "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
    assert inf.version == (0, 0, 0, 0) and inf.date == (2003, 1, 2)
    assert inf.catalog is None
    assert [m.hardware_id for m in inf.models] == ["PCI\\VEN_1AF4&DEV_1001", "PCI\\VEN_1AF4&DEV_1042"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[Version]\nClass=X\nClassGuid={0}\nProvider=P\n", "driverver"),
        ("[Version]\nClassGuid={0}\nProvider=P\nDriverVer=01/01/2020,1.0\n", "class"),
        ("[Version]\nClass=X\nClassGuid={0}\nProvider=P\nDriverVer=2020-01-01\n", "DriverVer"),
    ],
)
def test_parse_inf_errors_name_the_file_and_key(text: str, key: str) -> None:
    with pytest.raises(Vm2kvmError) as caught:
        parse_inf("bad.inf", text)
    assert caught.value.code is ErrorCode.INVALID_OPTION
    assert caught.value.file == "bad.inf" and caught.value.key == key
    assert "bad.inf" in caught.value.message


def test_nt10_falls_back_within_its_family_with_a_note(tmp_path: Path) -> None:
    files = listing(build_virtio_win(tmp_path, (("w10", "amd64"), ("2k16", "amd64")), drivers=("viostor",)))
    eleven = select_drivers(files, RELEASES["11 64-bit"])
    assert pick(eleven, "viostor").os_dir == "w10"
    assert [str(n) for n in eleven.notes] == [
        "virtio-win has no w11 directory for viostor; using its w10 driver (same NT 10.0 driver model)"
    ]
    server = select_drivers(files, RELEASES["Server 2022"])
    assert pick(server, "viostor").os_dir == "2k16"
    # Server never takes client drivers, and 8.1 never takes 10's.
    assert (
        select_drivers(
            listing(build_virtio_win(tmp_path / "c", (("w10", "amd64"),))), RELEASES["Server 2019"]
        ).drivers
        == ()
    )
    assert select_drivers(files, RELEASES["8.1 64-bit"]).drivers == ()


def test_virtio_win_option() -> None:
    from vm2kvmd.core.options import MigrateOptions

    opts = MigrateOptions.from_mapping({"virtio-win": "/srv/virtio-win"})
    assert opts.virtio_win == "/srv/virtio-win"
    assert opts.to_mapping() == {"virtio-win": "/srv/virtio-win"}
    with pytest.raises(Vm2kvmError) as caught:
        MigrateOptions.from_mapping({"virtio-win": "relative/dir"})
    assert caught.value.code is ErrorCode.INVALID_OPTION and caught.value.key == "virtio-win"


def test_cli_virtio_win_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vm2kvmctl.main import build_parser, mapping_options

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["migrate", "/vm/w.vmx", "--virtio-win", "vw"])
    assert mapping_options(args)["virtio-win"].value == str(tmp_path / "vw")
