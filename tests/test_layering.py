"""The layers, checked: core is pure, each layer imports only the ones below it, no import cycles.

Layers, bottom up: ``errors``/``constants``; ``core`` (pure: no I/O, no side
effects); ``adapters`` (libvirt, guestfs, qemu-img, the bus) and ``sources``
(reading a source VM); ``convert``; ``pipeline``; ``service`` and ``daemon``.
The CLI talks to the daemon over D-Bus only.  Built with ``ast`` (no imports
of the code under test), so a violation is found even in a module no test
happens to import.  Each rule also runs on a made-up bad module below, so a
rule that can no longer fail is noticed.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each part of vm2kvmd may import from vm2kvmd ("" is the package itself: __version__).
_BASE = frozenset({"errors", "constants"})
_CORE = _BASE | {"core"}
_ADAPTERS = _CORE | {"adapters", "aio"}
_SOURCES = _ADAPTERS | {"sources"}  # the vSphere loader (issue 12) reads through the session adapter
_CONVERT = _ADAPTERS | {"convert"}
_PIPELINE = _SOURCES | _CONVERT | {"pipeline"}
_SERVICE = _PIPELINE | {"", "service", "config"}
ALLOWED: Mapping[str, frozenset[str]] = {
    "": frozenset(),
    "errors": frozenset({"errors"}),
    "constants": _BASE,
    "core": _CORE,
    "aio": frozenset({"aio", "errors"}),
    "config": _BASE | {"config"},
    "adapters": _ADAPTERS,
    "sources": _SOURCES,
    "convert": _CONVERT,
    "pipeline": _PIPELINE,
    "service": _SERVICE,
    "daemon": _SERVICE | {"daemon"},
}
# vm2kvmctl reaches the daemon over D-Bus; from vm2kvmd it shares only names and error codes.
CLI_ALLOWED = frozenset({"", "errors", "constants"})
# ... and the one pure formatter, so a size reads the same in the CLI as in the daemon's messages.
CLI_SHARED_MODULES = frozenset(
    {"vm2kvmd.core.units", "vm2kvmd.core.vsphere.uri", "vm2kvmd.core.vsphere.credentials"}
)

# Standard library modules core may not import: they reach the OS, other processes or the network,
# or run things concurrently.  ``os`` stays (``os.path`` string functions), see _CORE_OS.
CORE_FORBIDDEN_STDLIB = frozenset(
    {
        "asyncio",
        "builtins",
        "concurrent",
        "ctypes",
        "dbm",
        "fcntl",
        "fileinput",
        "ftplib",
        "glob",
        "gzip",
        "http",
        "imaplib",
        "importlib",
        "io",
        "logging",
        "lzma",
        "bz2",
        "mmap",
        "multiprocessing",
        "pathlib",
        "pty",
        "pwd",
        "grp",
        "resource",
        "select",
        "selectors",
        "shelve",
        "shutil",
        "signal",
        "smtplib",
        "socket",
        "socketserver",
        "sqlite3",
        "ssl",
        "subprocess",
        "sys",
        "syslog",
        "tarfile",
        "tempfile",
        "threading",
        "time",
        "urllib.request",
        "venv",
        "webbrowser",
        "zipfile",
    }
)
# The one third-party module core uses: XML trees in memory (never read from files or the network).
CORE_THIRD_PARTY = frozenset({"lxml.etree"})
_CORE_ETREE = frozenset(
    {"Element", "SubElement", "QName", "XMLParser", "XMLSyntaxError", "fromstring", "tostring", "_Element"}
)
# ``os.path`` functions that only compute on strings (abspath/realpath/exists look at the process or disk).
_CORE_OS_PATH = frozenset(
    {"join", "dirname", "basename", "splitext", "split", "normpath", "isabs", "commonpath"}
)
_CORE_OS = frozenset({"path", "sep", "fspath", "PathLike"})
_CORE_BUILTINS = frozenset({"open", "input", "print", "exec", "eval", "compile", "breakpoint", "__import__"})

# Import cycles known today, each owned by the engineer whose area it is in; remove the entry with the cycle.
KNOWN_CYCLES: Mapping[frozenset[str], str] = {}


@dataclass(frozen=True)
class Module:
    name: str  # vm2kvmd.core.vmware.vmx
    path: str  # for messages
    tree: ast.Module


@dataclass(frozen=True)
class Import:
    module: Module
    target: str  # the imported module as written (absolute)
    names: tuple[str, ...]  # for "from target import a, b"
    line: int
    top_level: bool  # runs when the module is imported (not in a function, not under TYPE_CHECKING)
    type_checking: bool = False  # under ``if TYPE_CHECKING:`` (never runs)


def load_modules(base: Path, package: str) -> list[Module]:
    modules = []
    for path in sorted((base / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules.append(Module(name, str(path.relative_to(base)), ast.parse(path.read_text(), str(path))))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_imports(
    module: Module, nodes: Iterable[ast.stmt], top_level: bool, type_checking: bool = False
) -> Iterator[Import]:
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), node.lineno, top_level, type_checking)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                package = module.name.split(".")
                if not module.path.endswith("__init__.py"):
                    package = package[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([target] if target else [])])
            names = tuple(a.name for a in node.names)
            yield Import(module, target, names, node.lineno, top_level, type_checking)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk_imports(module, node.body, False, type_checking)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk_imports(module, node.body, False, True)
            yield from _walk_imports(module, node.orelse, top_level, type_checking)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    stmts = [c for c in children if isinstance(c, ast.stmt)]
                    for child in children:
                        if isinstance(child, ast.ExceptHandler | ast.match_case):
                            stmts.extend(child.body)
                    yield from _walk_imports(module, stmts, top_level, type_checking)


def imports_of(module: Module) -> list[Import]:
    return list(_walk_imports(module, module.tree.body, True))


def _part(name: str) -> str | None:
    """The part of vm2kvmd a module belongs to: "core", "pipeline", "" for the package; None outside."""
    parts = name.split(".")
    if parts[0] != "vm2kvmd":
        return None
    return parts[1] if len(parts) > 1 else ""


def _parts(imp: Import) -> set[str]:
    """The parts of vm2kvmd an import reaches; ``from vm2kvmd import pipeline`` reaches "pipeline"."""
    if imp.target == "vm2kvmd" and imp.names:
        return {"" if name.startswith("__") else name for name in imp.names}
    part = _part(imp.target)
    return set() if part is None else {part}


def _where(imp: Import) -> str:
    return f"{imp.module.path}:{imp.line}: imports {imp.target}"


def layer_violations(modules: Iterable[Module]) -> list[str]:
    problems = []
    for module in modules:
        own = _part(module.name)
        assert own is not None and own in ALLOWED, f"{module.name}: add its part of vm2kvmd to ALLOWED"
        for imp in imports_of(module):
            for part in _parts(imp) - ALLOWED[own]:
                problems.append(f"{_where(imp)}: {own or 'vm2kvmd'} may not import {part or 'vm2kvmd'}")
    return problems


def core_purity_violations(modules: Iterable[Module]) -> list[str]:
    problems = []
    for module in modules:
        if _part(module.name) != "core":
            continue
        for imp in imports_of(module):
            top = imp.target.split(".")[0]
            if top in ("vm2kvmd", "__future__"):
                continue
            dotted = {imp.target, top, *(f"{imp.target}.{n}" for n in imp.names)}
            if dotted & CORE_FORBIDDEN_STDLIB:
                problems.append(f"{_where(imp)}: core does no I/O and starts nothing")
            elif top not in sys.stdlib_module_names and not dotted & CORE_THIRD_PARTY:
                problems.append(f"{_where(imp)}: core imports no third-party library but {CORE_THIRD_PARTY}")
            elif top not in sys.stdlib_module_names and not {imp.target, *imp.names} <= {"lxml", "etree"}:
                problems.append(f"{_where(imp)}: core imports only lxml.etree")
            elif top == "os" and imp.names and not set(imp.names) <= _CORE_OS | _CORE_OS_PATH:
                problems.append(f"{_where(imp)}: core may use only os.path's string functions")
        problems.extend(_core_calls(module))
    return problems


def _core_calls(module: Module) -> Iterator[str]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CORE_BUILTINS:
            yield f"{module.path}:{node.lineno}: core calls {node.func.id}()"
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Name | ast.Attribute):
            continue
        owner = ast.unparse(node.value)
        if owner == "os" and node.attr not in _CORE_OS:
            yield f"{module.path}:{node.lineno}: core uses os.{node.attr}"
        elif owner in ("os.path", "posixpath", "ntpath") and node.attr not in _CORE_OS_PATH:
            yield f"{module.path}:{node.lineno}: core uses {owner}.{node.attr} (it looks at disk or cwd)"
        elif owner == "etree" and node.attr not in _CORE_ETREE:
            yield f"{module.path}:{node.lineno}: core uses etree.{node.attr} (only in-memory XML)"


def import_graph(modules: Iterable[Module]) -> dict[str, set[str]]:
    """Edges of every import between the given modules, those inside functions included ("no import
    cycle anywhere": a run-time import that closes a cycle hides the same tangle); only imports under
    ``TYPE_CHECKING`` are left out."""
    modules = list(modules)
    known = {m.name for m in modules}
    graph: dict[str, set[str]] = {m.name: set() for m in modules}
    for module in modules:
        for imp in imports_of(module):
            if imp.type_checking:
                continue
            # "from pkg import mod" imports pkg.mod; "from mod import name" imports mod.
            targets = {f"{imp.target}.{n}" for n in imp.names} & known or {imp.target} & known
            graph[module.name] |= targets - {module.name}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def cli_violations(modules: Iterable[Module]) -> list[str]:
    problems = []
    for module in modules:
        for imp in imports_of(module):
            if imp.target not in CLI_SHARED_MODULES and _parts(imp) - CLI_ALLOWED:
                problems.append(f"{_where(imp)}: the CLI shares only {sorted(CLI_ALLOWED)} with vm2kvmd")
    return problems


def imports_from_tests(modules: Iterable[Module]) -> set[tuple[str, str]]:
    """(file, module of tests/) for every import of tests/."""
    return {
        (module.path, imp.target)
        for module in modules
        for imp in imports_of(module)
        if imp.target.split(".")[0] == "tests"
    }


def _cli_package() -> str:
    return "vm2kvmctl"


@pytest.fixture(scope="module")
def vm2kvmd_modules() -> list[Module]:
    return load_modules(ROOT, "vm2kvmd")


# --- the code as it is ---------------------------------------------------------------


def test_core_is_pure(vm2kvmd_modules: list[Module]) -> None:
    assert core_purity_violations(vm2kvmd_modules) == []


def test_each_layer_imports_only_the_layers_below(vm2kvmd_modules: list[Module]) -> None:
    assert layer_violations(vm2kvmd_modules) == []


def test_no_import_cycles(vm2kvmd_modules: list[Module]) -> None:
    found = set(cycles(import_graph(vm2kvmd_modules)))
    assert sorted(map(sorted, found - set(KNOWN_CYCLES))) == []
    # A known cycle that is gone must leave the list, or a new one could hide under it.
    assert sorted(map(sorted, set(KNOWN_CYCLES) - found)) == []


def test_cli_uses_only_constants_and_errors() -> None:
    assert cli_violations(load_modules(ROOT, _cli_package())) == []


def test_scripts_bench_and_testbed_do_not_import_tests() -> None:
    """tests/ is not a library: what the demo and the benches share with the tests is testbed/."""
    modules = load_modules(ROOT, "scripts") + load_modules(ROOT, "bench") + load_modules(ROOT, "testbed")
    assert len(modules) >= 10
    assert sorted(imports_from_tests(modules)) == []


# --- each rule can fail --------------------------------------------------------------


def made_up(name: str, text: str) -> Module:
    return Module(name, name.replace(".", "/") + ".py", ast.parse(text))


@pytest.mark.parametrize(
    "text",
    [
        "import subprocess",
        "from pathlib import Path",
        "import asyncio.subprocess",
        "from urllib import request",
        "import libvirt",
        "from dbus_fast import Message",
        "import lxml.html",
        "from os import stat",
        "from os.path import realpath",
        "import os\nos.stat('/x')",
        "import os\nx = os.path.exists('/x')",
        "import os\nx = os.path.realpath('/x')",
        "import os\nx = os.open('/x', 0)",
        "data = open('/x').read()",
        "from lxml import etree\netree.parse('/x')",
    ],
)
def test_core_purity_rule_fails(text: str) -> None:
    assert core_purity_violations([made_up("vm2kvmd.core.bad", text)])


def test_core_purity_rule_accepts_pure_code() -> None:
    text = (
        "import os, re, struct\nfrom lxml import etree\nfrom vm2kvmd.errors import ErrorCode\n"
        "x = os.path.join(os.path.dirname('/a/b'), 'c')\ny = etree.tostring(etree.Element('a'))\n"
    )
    assert core_purity_violations([made_up("vm2kvmd.core.good", text)]) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("vm2kvmd.core.bad", "from vm2kvmd.sources import load_source"),
        ("vm2kvmd.core.bad", "import vm2kvmd.adapters.qemu_img"),
        ("vm2kvmd.adapters.bad", "from vm2kvmd.convert import linux"),
        ("vm2kvmd.adapters.bad", "from vm2kvmd.pipeline.engine import run_migration"),
        ("vm2kvmd.adapters.bad", "def f():\n    from vm2kvmd.service import bus"),
        ("vm2kvmd.adapters.bad", "from vm2kvmd.sources import load_source"),
        ("vm2kvmd.sources.bad", "from vm2kvmd.pipeline import planning"),
        ("vm2kvmd.pipeline.bad", "from vm2kvmd.service import manager"),
        ("vm2kvmd.adapters.bad", "from ..convert import inspect"),
    ],
)
def test_layer_rule_fails(name: str, text: str) -> None:
    assert layer_violations([made_up(name, text)])


def test_cycle_rule_fails() -> None:
    a = made_up("vm2kvmd.core.a", "from vm2kvmd.core import b")
    b = made_up("vm2kvmd.core.b", "import vm2kvmd.core.c")
    c = made_up("vm2kvmd.core.c", "from vm2kvmd.core.a import thing")
    lazy = made_up("vm2kvmd.core.d", "def f():\n    from vm2kvmd.core import a")
    typing_only = made_up(
        "vm2kvmd.core.e", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import vm2kvmd.core.d"
    )
    assert cycles(import_graph([a, b, c, lazy, typing_only])) == [frozenset({a.name, b.name, c.name})]
    # An import inside a function closes a cycle too; one under TYPE_CHECKING never runs.
    d_uses = made_up("vm2kvmd.core.a", "import vm2kvmd.core.d")
    assert cycles(import_graph([d_uses, lazy])) == [frozenset({d_uses.name, lazy.name})]
    e_uses = made_up("vm2kvmd.core.a", "import vm2kvmd.core.e")
    assert cycles(import_graph([e_uses, typing_only])) == []


def test_cli_rule_fails() -> None:
    assert cli_violations([made_up("cli.bad", "from vm2kvmd.core.options import MigrateOptions")])
    assert cli_violations([made_up("cli.bad", "from vm2kvmd import pipeline")])
    assert (
        cli_violations(
            [made_up("cli.ok", "from vm2kvmd import __version__\nfrom vm2kvmd.errors import ErrorCode")]
        )
        == []
    )


def test_tests_import_rule_fails() -> None:
    assert imports_from_tests([made_up("bench.bad", "from tests.helpers.vmdk_factory import make_vmdk")])
    assert imports_from_tests([made_up("scripts.bad", "def f():\n    import tests.guests.fixtures")])
    assert imports_from_tests([made_up("scripts.ok", "from vm2kvmd.constants import BUS_NAME")]) == set()
    assert imports_from_tests([made_up("scripts.ok", "from testbed.services import DirPool")]) == set()
