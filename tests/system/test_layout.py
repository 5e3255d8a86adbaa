"""The layout holds: what imports what, what each package says it holds, the public surfaces.

* actors/ is subpackages only, and they import in layer order (actors/__init__.py lists it);
* nothing outside runtime/ and config/ imports their private modules: their ``__init__``
  re-exports what others need, and every name in their ``__all__`` is there;
* each actors package's docstring names each of its modules;
* no test file imports another test file: shared helpers live in tests/support/.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

# Bottom up: a package imports only from packages before it (and from runtime/, config/).
LAYERS = [
    "domain",
    "bus",
    "stores",
    "providers",
    "telemetry",
    "auth",
    "integration",
    "email_server",
    "grpc",
    "http",
    "feedback",
    "webhooks",
    "web",
    "profiles",
    "testing",
    "ops",
]

# Reaching into a private module on purpose: the benchmark of Trio's stock guest driver
# against ours switches the fast one off.
PRIVATE_IMPORT_ALLOWED = {"bench/bridge.py"}


def python_files(*tops: str) -> Iterator[Path]:
    for top in tops:
        path = ROOT / top
        if path.is_file():
            yield path
        else:
            yield from sorted(path.rglob("*.py"))


def imports_of(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, absolute module, names) for every import in *path*, nested ones too."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module, [a.name for a in node.names]


def test_actors_is_subpackages_each_in_a_layer() -> None:
    packages = sorted(p.name for p in (ROOT / "actors").iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(LAYERS)
    loose = [p.name for p in (ROOT / "actors").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules directly in actors/: {loose}"


def test_actors_packages_import_in_layer_order() -> None:
    wrong = []
    for i, package in enumerate(LAYERS):
        allowed = set(LAYERS[: i + 1])
        for path in python_files(f"actors/{package}"):
            for line, module, _ in imports_of(path):
                parts = module.split(".")
                if parts[0] == "actors" and len(parts) > 1 and parts[1] not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "an import against the layers:\n" + "\n".join(wrong)


def test_no_private_module_of_runtime_or_config_is_imported_from_outside() -> None:
    wrong = []
    for path in python_files("actors", "bench", "tests", "supervisor.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("tests/runtime/", "tests/config/")) or rel in PRIVATE_IMPORT_ALLOWED:
            continue  # the packages' own tests may look inside
        for line, module, names in imports_of(path):
            top, _, rest = module.partition(".")
            if top in ("runtime", "config") and (
                rest.startswith("_") or any(n.startswith("_") for n in names if not rest)
            ):
                wrong.append(f"{rel}:{line} imports {module} {names}")
    assert not wrong, "private modules imported from outside:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", ["runtime", "config"])
def test_public_surface_is_whole(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert len(names) == len(set(names)), "a name twice in __all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"in {package}.__all__ but not there: {missing}"
    # every public name the package hands on is in __all__
    handed_on = [
        n for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", "").startswith(f"{package}._")
    ]
    assert sorted(set(handed_on) - set(names)) == []


def test_each_actors_package_names_its_modules() -> None:
    unnamed = []
    for package in LAYERS:
        folder = ROOT / "actors" / package
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        for path in folder.glob("*.py"):
            if path.name != "__init__.py" and f"``{path.stem}``" not in doc:
                unnamed.append(f"actors/{package}/{path.name}")
    assert not unnamed, f"not in their package's docstring: {unnamed}"


def test_no_test_file_imports_another() -> None:
    wrong = []
    for path in python_files("tests"):
        for line, module, names in imports_of(path):
            leaf = module.rpartition(".")[2]
            if leaf.startswith("test_") or any(
                n.startswith("test_") for n in names if module.startswith("tests")
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "test files importing test files:\n" + "\n".join(wrong)
