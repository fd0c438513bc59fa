"""Every test checks something: no test function of ``tests/`` passes for lack of an assertion.

A test "checks something" when its body (nested functions and lambdas included) holds an
``assert`` statement, a ``pytest.raises``/``pytest.warns``/``pytest.deprecated_call``, or a call
of a helper whose name starts with ``assert_`` or ``expect_`` (``mock.assert_called_once_with``,
``numpy.testing.assert_array_equal``, a helper of our own) or is in :data:`CHECKING_HELPERS`.
A test that only runs code proves that the code did not raise, which is rarely what its name
says; give it the assertion its name promises, or remove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

#: Calls that check, though their names do not say so; each with its reason.
CHECKING_HELPERS: dict[str, str] = {
    "raises": "pytest.raises: fails unless the block raises (also a bare ``raises`` imported from pytest)",
    "warns": "pytest.warns: fails unless the block warns",
    "deprecated_call": "pytest.deprecated_call: fails unless the block emits a DeprecationWarning",
}

#: Tests known to hold no check, as ``"path::name"``, each with the reason it is allowed for now.
#: An entry is a debt: fix the test, then remove the entry (an entry that no longer matches fails).
ALLOWED: dict[str, str] = {}


def _test_functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """``(name, node)`` of each test function pytest collects: ``test_*`` at module level and in ``Test*`` classes."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test"):
                    yield f"{node.name}::{item.name}", item


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def checks(function: ast.AST) -> bool:
    """Whether ``function`` holds an assertion, an expected raise or warning, or a checking helper's call."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name and (name.startswith(("assert_", "expect_")) or name in CHECKING_HELPERS):
                return True
    return False


def unchecked() -> list[str]:
    """``path::name`` of every test function under ``tests/`` that checks nothing."""
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for name, node in _test_functions(tree):
            if not checks(node):
                found.append(f"{path.relative_to(ROOT).as_posix()}::{name}")
    return found


def test_every_test_function_asserts_something():
    offenders = [name for name in unchecked() if name not in ALLOWED]
    assert offenders == [], "Tests that check nothing (assert what the name says, or remove them):\n" + "\n".join(
        offenders
    )


def test_every_allowed_entry_still_names_a_test_that_checks_nothing():
    assert sorted(set(ALLOWED) - set(unchecked())) == []


def test_the_guard_tells_a_checking_test_from_one_that_only_runs_code():
    source = """
import pytest

def test_runs():
    compute()

def test_asserts():
    assert compute() == 1

def test_raises():
    with pytest.raises(ValueError):
        compute()

def test_mock(hook):
    hook.run()
    hook.run.assert_called_once_with()

def test_helper():
    expect_rows(compute(), 3)

def test_nested_lambda():
    retry(lambda: compute() == 1)

class TestGroup:
    def test_method(self):
        compute()

    def helper(self):
        assert False

def helper_test():
    compute()
"""
    tree = ast.parse(source)
    found = {name: checks(node) for name, node in _test_functions(tree)}
    assert found == {
        "test_runs": False,
        "test_asserts": True,
        "test_raises": True,
        "test_mock": True,
        "test_helper": True,
        "test_nested_lambda": False,
        "TestGroup::test_method": False,
    }
