"""The rules of the house, checked on the source so they cannot drift (docs/architecture.md,
"Rules of the house").

Imports are read with `ast`, not by importing: a rule broken inside a function body, the place a
lazy import hides, is found as surely as one at the top of a file. Each rule names the modules it
binds and the modules they must never reach; a unit check on synthetic source shows the reader
below can see a broken rule at all, so a rule that passes is not passing by blindness.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scanctl"

# What the CLI must not load at startup (tests/test_startup.py measures the same in a process).
HEAVY = ("httpx", "anyio", "aiohttp", "rich.progress", "rich.console", "uvicorn", "starlette")


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module, as absolute dotted name, and where the import statement sits."""

    module: str
    line: int
    top_level: bool  # executed when the importing module loads (not in a function or TYPE_CHECKING)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every module `source` (the text of `module`) imports, relative imports made absolute.

    `from a import b` counts as importing `a` and `a.b` (b may be a submodule: the rule must
    see `from scanctl import engine`)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, child.lineno, top_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.append(Import(base, child.lineno, top_level))
                found.extend(
                    Import(f"{base}.{a.name}", child.lineno, top_level) for a in child.names
                )
            elif isinstance(child, FUNCTIONS) or (
                isinstance(child, ast.If) and _is_type_checking(child)
            ):
                visit(child, False)  # runs later, or never: not at the importer's startup
            else:
                visit(child, top_level)

    visit(ast.parse(source), True)
    return found


def _sources() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path


SOURCES = dict(_sources())


def imports(module: str) -> list[Import]:
    path = SOURCES[module]
    return imports_of(path.read_text("utf-8"), module, is_package=path.name == "__init__.py")


def reaches(name: str, targets: Iterable[str]) -> bool:
    """Whether the imported module `name` is one of `targets` or inside one of them."""
    return any(name == t or name.startswith(t + ".") for t in targets)


def loaded_at_startup(module: str) -> dict[str, list[str]]:
    """The modules loading `module` loads, following scanctl's own top-level imports: each
    with the chain that brings it in (for the failure message)."""
    chains: dict[str, list[str]] = {module: [module]}
    todo = [module]
    while todo:
        current = todo.pop()
        for found in imports(current):
            if not found.top_level or found.module in chains:
                continue
            chains[found.module] = [*chains[current], found.module]
            if found.module in SOURCES:
                todo.append(found.module)
    return chains


def broken(modules: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    """`module:line imports name` for every import of a forbidden module, anywhere in a file."""
    forbidden = tuple(forbidden)
    return [
        f"{module}:{found.line} imports {found.module}"
        for module in modules
        for found in imports(module)
        if reaches(found.module, forbidden)
    ]


# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["scanctl", "scanctl.cli", "scanctl.settings"])
def test_the_cli_and_the_package_load_nothing_heavy(entry: str) -> None:
    chains = loaded_at_startup(entry)
    heavy = {name: chain for name, chain in chains.items() if reaches(name, HEAVY)}
    assert not heavy, " ; ".join(" -> ".join(chain) for chain in heavy.values())


PACING_SIDE = (
    "scanctl.pacing",
    "scanctl.gate",
    "scanctl.quota",
    "scanctl.retry",
    "scanctl.ratecontrol",
    "scanctl.resilience",
)


def test_pacing_retry_ratecontrol_and_resilience_never_import_what_runs_them() -> None:
    upper = ("scanctl.engine", "scanctl.output", "scanctl.progress", "scanctl.cli")
    assert broken(PACING_SIDE, upper) == []


def test_the_cache_never_imports_the_engine() -> None:
    cache = [name for name in SOURCES if reaches(name, ["scanctl.cache"])]
    assert len(cache) >= 5, cache  # the package and its backends were found
    assert broken(cache, ["scanctl.engine", "scanctl.runner"]) == []


def test_output_knows_nothing_of_http() -> None:
    writers = ("scanctl.output", "scanctl.table", "scanctl.promfile")
    assert broken(writers, ["httpx", "aiohttp", "scanctl.transport", "scanctl.answer"]) == []


def test_the_settings_model_stays_a_leaf() -> None:
    """The engine, the cache and the resilience module take their defaults from settings.py,
    so it must load none of them (nor anything that does): only the errors and the colour
    choices, at load; profiles are read inside `resolve`."""
    loaded = {name for name in loaded_at_startup("scanctl.settings") if name in SOURCES}
    assert loaded <= {"scanctl.settings", "scanctl.errors", "scanctl.terminal"}, loaded


def test_every_rule_names_modules_that_exist() -> None:
    """A renamed module must not leave a rule guarding nothing."""
    for name in (*PACING_SIDE, "scanctl.output", "scanctl.cli", "scanctl.engine", "scanctl.cache"):
        assert name in SOURCES, name


def test_the_readme_layout_and_the_parts_name_every_module() -> None:
    """A module added or removed shows in README's Layout and in docs/architecture.md's parts,
    so a reader's map of the package stays whole."""
    root = PACKAGE.parent
    layout = (root / "README.md").read_text("utf-8").split("## Layout", 1)[1]
    listed = set(re.findall(r"scanctl/([\w.]+/?)", layout))
    present = {
        path.name + ("/" if path.is_dir() else "")
        for path in PACKAGE.iterdir()
        if path.name != "__pycache__"
    }
    assert listed == present
    parts = (root / "docs" / "architecture.md").read_text("utf-8").split("## Settings", 1)[0]
    named = set(re.findall(r"`([\w]+\.py|[\w]+/)`", parts))
    modules = {name for name in present if name.endswith((".py", "/")) and name != "__main__.py"}
    assert modules <= named, modules - named


# -- the reader can see a broken rule ------------------------------------------------------------


SYNTHETIC = """
from __future__ import annotations
import json
from typing import TYPE_CHECKING
from . import engine
from .cache import front as cache_front

if TYPE_CHECKING:
    from scanctl.output import RecordWriter

def later() -> None:
    import httpx
    from ..other import thing
"""


def test_the_reader_finds_imports_anywhere_and_resolves_relative_ones() -> None:
    found = imports_of(SYNTHETIC, "scanctl.pacing")
    names = {(i.module, i.top_level) for i in found}
    assert ("json", True) in names
    assert ("scanctl.engine", True) in names  # `from . import engine`
    assert ("scanctl.cache.front", True) in names
    assert ("scanctl.output", False) in names  # under TYPE_CHECKING: not loaded, still a rule
    assert ("httpx", False) in names  # in a function: not at startup, still an import
    assert ("other.thing", False) in names  # two dots from scanctl.pacing: above the package
    assert reaches("scanctl.engine", ["scanctl.engine"])
    assert not reaches("scanctl.engines", ["scanctl.engine"])


def test_a_package_resolves_relative_imports_from_itself() -> None:
    found = imports_of("from .store import Entry\n", "scanctl.cache", is_package=True)
    assert {i.module for i in found} == {"scanctl.cache.store", "scanctl.cache.store.Entry"}
