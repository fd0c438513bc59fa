"""The distribution's metadata tells the truth: every third-party import is a requirement (or
comes with one, said where), the provider's state agrees with its classifiers, and ``py.typed``
ships. ``make test-wheel`` (scripts/test_wheel.py) checks the same by installing the wheel alone."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import itertools
import re
import sys
from functools import cache

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from airflow_provider_mlci.get_provider_info import get_provider_info
from tests.conftest import ROOT

PACKAGE = ROOT / "airflow_provider_mlci"

#: Imported, not listed in install_requires, and required by a requirement that is (checked below):
#: Airflow's own web, trigger and database stack, and DVC internals used only through DVC's objects.
BROUGHT_BY = {
    "apache-airflow-providers-standard": "apache-airflow",
    "asgiref": "apache-airflow",
    "fastapi": "apache-airflow",
    "requests": "apache-airflow",
    "sqlalchemy": "apache-airflow",
    "starlette": "apache-airflow",
    "dvc-data": "dvc",
    "networkx": "dvc",
}
#: Imported only inside ``try: ... except ImportError`` or as its fallback (a model file's format;
#: pip's copy of packaging where a project's interpreter lacks packaging).
GUARDED = {"joblib", "skops", "pip"}
#: Imported only by what an extra installs: OpenLineage facets (lineage.py and assets.py import
#: them only once the OpenLineage provider is found); Optuna (core.experiments.study, imported when a
#: study is opened). PyGithub is a requirement of its own.
BY_EXTRA = {
    "apache-airflow-providers-openlineage": "openlineage",
    "openlineage-python": "openlineage",
    "attrs": "openlineage",
    "optuna": "optuna",
}
#: Imported only by the test helpers in ``airflow_provider_mlci/testing`` (the dev extra).
TEST_HELPERS_ONLY = {"moto"}
#: Imported only where Airflow itself catches the ImportError: the connection form's fields for
#: Airflow 3.1, from the FAB provider's form library (module: its distribution; not installed here).
CAUGHT_BY_AIRFLOW = {"flask_appbuilder": "flask-appbuilder", "wtforms": "wtforms"}


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def requirements(text: str) -> list[Requirement]:
    return [Requirement(line) for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def install_requires() -> dict[str, Requirement]:
    return {canonicalize_name(req.name): req for req in requirements(setup_cfg()["options"]["install_requires"])}


def closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """``name`` and every distribution it requires (with ``extras``), as the installed metadata says."""
    found: set[str] = set()
    todo = [(canonicalize_name(name), extras)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        current, wanted = todo.pop()
        if (current, wanted) in seen:
            continue
        seen.add((current, wanted))
        found.add(current)
        for text in _requires(current):
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": extra}) for extra in wanted | {""}):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return found


@cache
def _requires(name: str) -> tuple[str, ...]:
    try:
        return tuple(importlib.metadata.requires(name) or ())
    except importlib.metadata.PackageNotFoundError:
        return ()


@cache
def _module_owners() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution(module: str) -> str | None:
    """The distribution an absolute import of ``module`` comes from (``None``: stdlib or ours)."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in ("__future__", "airflow_provider_mlci"):
        return None
    if top == "airflow":
        parts = module.split(".")
        if len(parts) > 2 and parts[1] == "providers":
            name = "-".join(parts[2:4]) if parts[2] == "common" else parts[2]  # common.compat: common-compat
            return canonicalize_name(f"apache-airflow-providers-{name}")
        return "apache-airflow"
    if top in CAUGHT_BY_AIRFLOW:
        return CAUGHT_BY_AIRFLOW[top]
    dists = _module_owners().get(top)
    assert dists, f"{module} is installed by no distribution here"
    return canonicalize_name(dists[0])


def third_party_imports() -> dict[str, dict[str, list[tuple[ast.AST, list[ast.AST]]]]]:
    """``{distribution: {file: [(import node, its ancestors)]}}`` for every import in the package."""
    found: dict[str, dict[str, list[tuple[ast.AST, list[ast.AST]]]]] = {}

    def visit(node: ast.AST, ancestors: list[ast.AST], path: str) -> None:
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            modules = [node.module]
        for module in modules:
            dist = _distribution(module)
            if dist:
                found.setdefault(dist, {}).setdefault(path, []).append((node, ancestors))
        for child in ast.iter_child_nodes(node):
            visit(child, [*ancestors, node], path)

    for path in sorted(PACKAGE.rglob("*.py")):
        visit(ast.parse(path.read_text()), [], str(path.relative_to(ROOT)))
    return found


def _catches_import_error(node: ast.AST, ancestors: list[ast.AST]) -> bool:
    """Whether ``node`` is tried under ``except ImportError`` (or is that handler's fallback)."""
    chain = [*ancestors, node]
    for parent, child in itertools.pairwise(chain):
        if isinstance(parent, ast.Try):
            handlers = [h for h in parent.handlers if h.type is not None and "ImportError" in ast.unparse(h.type)]
            if handlers and (child in parent.body or child in handlers):
                return True
    return False


def _in_type_checking(ancestors: list[ast.AST]) -> bool:
    return any(isinstance(a, ast.If) and ast.unparse(a.test).endswith("TYPE_CHECKING") for a in ancestors)


def test_every_third_party_import_is_a_requirement_or_comes_with_one():
    required = install_requires()
    assert not set(BY_EXTRA) & set(required), "listed as brought by an extra, but a requirement itself"
    unaccounted = {}
    for dist, files in third_party_imports().items():
        if dist in required or dist in BROUGHT_BY or dist in BY_EXTRA:
            continue
        if dist in CAUGHT_BY_AIRFLOW.values():
            sites = [(path, ancestors) for path, found in files.items() for _, ancestors in found]
            methods = {(path, ancestors[-1].name) for path, ancestors in sites if ancestors}
            assert methods == {("airflow_provider_mlci/hooks/dvc.py", "get_connection_form_widgets")}, (dist, methods)
            continue
        if dist in TEST_HELPERS_ONLY:
            assert all(path.startswith("airflow_provider_mlci/testing/") for path in files), (dist, sorted(files))
            continue
        if dist in GUARDED:
            for path, sites in files.items():
                for node, ancestors in sites:
                    assert _catches_import_error(node, ancestors) or _in_type_checking(ancestors), (
                        f"{path}:{node.lineno} imports {dist} without catching ImportError"
                    )
            continue
        unaccounted[dist] = sorted(files)
    assert unaccounted == {}, f"imported but not in install_requires (setup.cfg): {unaccounted}"


def test_what_comes_with_a_requirement_does_come_with_it():
    required = install_requires()
    for dist, carrier in BROUGHT_BY.items():
        req = required[canonicalize_name(carrier)]
        assert dist in closure(req.name, frozenset(req.extras)), f"{carrier} does not bring {dist}"
    extras = setup_cfg()["options.extras_require"]
    for dist, extra in BY_EXTRA.items():
        brought = set().union(*(closure(r.name, frozenset(r.extras)) for r in requirements(extras[extra])))
        assert dist in brought, f"the [{extra}] extra does not bring {dist}"


def test_pandas_comes_with_the_requirements_themselves():
    """pandera brings pandas only through its [pandas] extra: the gap issue 18 found."""
    required = install_requires()
    for name in ("pandas", "numpy", "pyarrow"):
        assert name in required, f"{name} is imported at run time: list it in install_requires"
    assert "pandas" in required["pandera"].extras


def test_the_provider_state_agrees_with_the_development_status():
    classifiers = setup_cfg()["metadata"]["classifiers"]
    (level,) = re.findall(r"Development Status :: (\d) - ", classifiers)
    state = get_provider_info()["state"]
    assert state in ("not-ready", "ready")  # Airflow's provider.yaml schema also has suspended, removed
    # Alpha and earlier: not ready; Beta and later: ready.
    assert (state == "ready") == (int(level) >= 4), f"state {state!r} beside Development Status {level}"


def test_python_classifiers_are_within_python_requires():
    metadata, options = setup_cfg()["metadata"], setup_cfg()["options"]
    versions = re.findall(r"Programming Language :: Python :: (3\.\d+)", metadata["classifiers"])
    assert versions, "no Python version classifier"
    floor = re.fullmatch(r">=\s*(3\.\d+)", options["python_requires"].strip())
    assert floor, options["python_requires"]
    assert all(tuple(map(int, v.split("."))) >= tuple(map(int, floor.group(1).split("."))) for v in versions)


def test_py_typed_and_the_license_ship():
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in setup_cfg()["options.package_data"]["airflow_provider_mlci"]
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    urls = setup_cfg()["metadata"]["project_urls"]
    for label in ("Source", "Issues", "Documentation", "Changelog"):
        assert re.search(rf"^\s*{label} = https://", urls, flags=re.MULTILINE), label
