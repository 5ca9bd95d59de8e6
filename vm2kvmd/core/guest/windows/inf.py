"""What a driver package's INF file says about itself: pure, over the INF's text.

Only what registering a driver offline needs: the ``[Version]`` section
(class, class GUID, provider, ``DriverVer``, catalog) and the hardware IDs of
its ``[Models]`` sections with the install section each one names (the
DriverDatabase calls that install section the driver's *configuration*).
INF syntax: ``;`` starts a comment, ``%token%`` is looked up in
``[Strings]``, section and key names are case-insensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vm2kvmd.errors import ErrorCode, Vm2kvmError

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_TOKEN = re.compile(r"%([^%]+)%")


@dataclass(frozen=True)
class InfModel:
    hardware_id: str  # "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", as written
    install_section: str  # "rhelscsi_inst"
    description: str  # the device's name shown in Device Manager


@dataclass(frozen=True)
class InfInfo:
    name: str  # the INF's file name, lower case: "viostor.inf"
    driver_class: str  # "SCSIAdapter"
    class_guid: str  # "{4D36E97B-E325-11CE-BFC1-08002BE10318}", upper case
    provider: str  # "Red Hat, Inc."
    date: tuple[int, int, int]  # DriverVer date (year, month, day)
    version: tuple[int, int, int, int]  # DriverVer version
    catalog: str | None  # CatalogFile (lower case), None when unsigned
    models: tuple[InfModel, ...]

    @property
    def driver_ver(self) -> str:
        y, m, d = self.date
        return f"{m:02d}/{d:02d}/{y:04d},{'.'.join(str(v) for v in self.version)}"


def _strip_comment(line: str) -> str:
    # A ';' inside a quoted string is text, not a comment.
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            return line[:i]
    return line


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = _strip_comment(raw).strip()
        if not line:
            continue
        match = _SECTION.match(line)
        if match:
            current = sections.setdefault(match.group(1).strip().lower(), [])
        elif current is not None:
            current.append(line)
    return sections


def _key_values(lines: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def parse_inf(name: str, text: str) -> InfInfo:
    """The INF's identity and models; ``name`` is its file name (for errors and the result)."""
    sections = _sections(text)
    strings = {k.lower(): _unquote(v) for k, v in _key_values(sections.get("strings", []))}

    def expand(value: str) -> str:
        return _unquote(_TOKEN.sub(lambda m: strings.get(m.group(1).lower(), m.group(0)), value))

    version = {k.lower(): expand(v) for k, v in _key_values(sections.get("version", []))}

    def need(key: str) -> str:
        if not version.get(key):
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                f"driver file {name} has no {key} in its [Version] section",
                file=name,
                key=key,
                hint="use the INF files of an unmodified virtio-win ISO",
            )
        return version[key]

    date, ver = _driver_ver(name, need("driverver"))
    models: list[InfModel] = []
    for _manufacturer, value in _key_values(sections.get("manufacturer", [])):
        # "%RHEL% = RHEL, NTamd64" -> sections [RHEL], [RHEL.NTamd64]
        parts = [p.strip() for p in expand(value).split(",")]
        base, decorations = parts[0], parts[1:]
        for section in [base, *(f"{base}.{d}" for d in decorations)]:
            for desc, install in _key_values(sections.get(section.lower(), [])):
                install_parts = [p.strip() for p in install.split(",")]
                for hwid in install_parts[1:]:
                    model = InfModel(hwid, install_parts[0], expand(desc))
                    if model not in models:
                        models.append(model)
    catalog = version.get("catalogfile") or None
    return InfInfo(
        name=name.lower(),
        driver_class=need("class"),
        class_guid=need("classguid").upper(),
        provider=need("provider"),
        date=date,
        version=ver,
        catalog=catalog.lower() if catalog else None,
        models=tuple(models),
    )


def _driver_ver(name: str, value: str) -> tuple[tuple[int, int, int], tuple[int, int, int, int]]:
    # DriverVer = mm/dd/yyyy[,w.x.y.z]
    date_text, _, version_text = value.partition(",")
    try:
        month, day, year = (int(p) for p in date_text.strip().split("/"))
        numbers = [int(p) for p in version_text.strip().split(".")] if version_text.strip() else []
    except ValueError:
        numbers, month = [], 0
    if not 1 <= month <= 12 or len(numbers) > 4:
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"driver file {name} has a DriverVer that is not mm/dd/yyyy,w.x.y.z: {value}",
            file=name,
            key="DriverVer",
            value=value,
            hint="use the INF files of an unmodified virtio-win ISO",
        )
    padded = (*numbers, 0, 0, 0, 0)[:4]
    return (year, month, day), (padded[0], padded[1], padded[2], padded[3])
