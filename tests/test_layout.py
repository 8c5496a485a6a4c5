"""The two layers of s4g: the library never imports the application, no import cycle, and
`s4g --help` / `s4g COMMAND --help` load neither torch, nor the compiled extension, nor the
synthetic world. The lists below are the only place the layers are named."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import s4g

PACKAGE = Path(s4g.__file__).resolve().parent
# Everything under these is the application; every other module of s4g is the library.
APPLICATION = ("s4g.app",)
# The one deliberate crossing, inside a function: --dataset synthetic's data root is the cached
# world, which the application renders; the registry loads it only when a run asks for it.
LAZY_CROSSINGS = {("s4g.data.registry", "s4g.app.synth.cache")}
# What `--help` may load: the CLI, the dataset registry and readers (numpy only), and the small
# modules they stand on.
HELP_MAY_LOAD = ("s4g.app.cli", "s4g.data", "s4g.data.registry", "s4g.config", "s4g.errors", "s4g.fileio",
                 "s4g.flags")
SYNTHETIC_WORLD = "s4g.app.synth"


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """The s4g modules `name` imports, each with whether the import runs when it loads (module
    level, including under `if`/`try`) rather than inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, at_load: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, at_load) for a in child.names if _under(a.name, ("s4g",)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = name if _is_package(name) else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                if not _under(base, ("s4g",)):
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in MODULES else base, at_load))
            visit(child, at_load and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return found


def test_layer_lists_name_real_modules():
    for name in APPLICATION + HELP_MAY_LOAD + (SYNTHETIC_WORLD,):
        assert name in MODULES, f"{name} is named in tests/test_layout.py but is not a module of s4g"
    for lib, app in LAZY_CROSSINGS:
        assert lib in MODULES and app in MODULES


def test_library_imports_nothing_from_the_application():
    wrong = []
    for name, path in MODULES.items():
        if _under(name, APPLICATION):
            continue
        for target, at_load in _imports(name, path):
            if not _under(target, APPLICATION):
                continue
            if (name, target) in LAZY_CROSSINGS and not at_load:
                continue
            wrong.append(f"{name} imports {target}" + ("" if at_load else " (inside a function)"))
    assert not wrong, "the library imports the application:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, at_load in _imports(name, path):
            # A submodule importing from its own package runs after the package started loading.
            if at_load and target in graph and not name.startswith(target + "."):
                graph[name].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


def _commands() -> list[str]:
    import typer.main

    from s4g.app.cli import app

    return sorted(typer.main.get_command(app).commands)


_PROBE = """
import json, sys
from s4g.app.cli import main
sys.argv = ["s4g", *sys.argv[1:], "--help"]
try:
    main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("command", [None, *_commands()])
def test_help_loads_no_torch_no_extension_no_world(command):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", _PROBE] + ([command] if command else [])
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    s4g_loaded = {m for m in loaded if _under(m, ("s4g",))}
    assert "torch" not in loaded
    assert "s4g._sampler" not in loaded
    assert not [m for m in s4g_loaded if _under(m, (SYNTHETIC_WORLD,))]
    packages_above = {p.rsplit(".", i)[0] for p in HELP_MAY_LOAD for i in range(p.count(".") + 1)}
    assert {m for m in s4g_loaded if not _under(m, HELP_MAY_LOAD)} <= packages_above, sorted(s4g_loaded)
    assert {"s4g.app.cli", "s4g.data.registry"} <= s4g_loaded


def test_split_constants_agree():
    """The values the cut imports used to carry: the Earth radius the Rust side uses, and the
    preset imported weights default to (CVUSA's)."""
    from s4g import _sampler, geo
    from s4g.config import Preset
    from s4g.data import registry as datasets

    assert geo.EARTH_RADIUS_M == _sampler.EARTH_RADIUS_M
    assert datasets.get("cvusa").preset == Preset()
