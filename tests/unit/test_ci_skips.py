"""No silent skips in CI (tests/helpers/skips.py): pytest runs on a tiny test file in a folder of its
own, with the check registered as tests/conftest.py registers it, with and without ``CI``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.skips import ALLOWED

ROOT = Path(__file__).resolve().parents[2]

TESTS = textwrap.dedent(
    """
    import pytest

    def test_runs():
        pass

    def test_needs_a_gpu():
        pytest.skip("no GPU here")

    @pytest.mark.skipif(True, reason="not on this platform")
    def test_marked():
        pass

    @pytest.mark.xfail(reason="a known bug")
    def test_known_bug():
        assert False

    @pytest.mark.parametrize("n", [1, 2])
    def test_each(n):
        if n == 2:
            pytest.skip("two is not ready")
    """
)
#: A module that skips as a whole while it is collected.
WHOLE_MODULE = 'import pytest\n\npytest.importorskip("mlci_no_such_module")\n\n\ndef test_never():\n    pass\n'

#: What a CI run of the files above prints about the skips, each line whole.
UNLISTED = [
    "SKIPPED test_skips.py::test_needs_a_gpu: no GPU here",
    "SKIPPED test_skips.py::test_marked: not on this platform",
    "XFAILED test_skips.py::test_known_bug: a known bug",
    "SKIPPED test_skips.py::test_each[2]: two is not ready",
    "SKIPPED test_whole_module.py: could not import 'mlci_no_such_module': No module named 'mlci_no_such_module'",
]
HEADER = (
    "CI is set: 5 test(s) skipped or xfailed outside the allow-list (tests/helpers/skips.py ALLOWED), so the run fails:"
)

CONFTEST = textwrap.dedent(
    """
    from tests.helpers.skips import AllowedSkip, register

    ALLOW = {allow!r}


    def pytest_configure(config):
        register(config, [AllowedSkip(*entry) for entry in ALLOW])
    """
)

#: Every skip of the files above, allowed (node id, the skip's message, why).
ALLOW_ALL = [
    ("test_skips.py::test_needs_a_gpu", "no GPU here", "the GPU test runs on the GPU runner"),
    ("test_skips.py::test_marked", "not on this platform", "another platform's test"),
    ("test_skips.py::test_known_bug", "a known bug", "recorded, strict elsewhere"),
    ("test_skips.py::test_each", "two is not ready", "every variant that says so"),
    (
        "test_whole_module.py",
        "could not import 'mlci_no_such_module': No module named 'mlci_no_such_module'",
        "an optional module",
    ),
]


def run_pytest(folder: Path, *args: str, ci: str | None, allow: list[tuple[str, str, str]]) -> tuple[int, list[str]]:
    """Run pytest on ``folder`` (its own rootdir, not this project's configuration); exit code and lines."""
    (folder / "conftest.py").write_text(CONFTEST.format(allow=allow))
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_skips.py").write_text(TESTS)
    (folder / "test_whole_module.py").write_text(WHOLE_MODULE)
    env = {
        key: value for key, value in os.environ.items() if key not in ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return completed.returncode, completed.stdout.splitlines()


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_in_ci_a_skip_outside_the_allow_list_fails_the_run_naming_each(tmp_path, args):
    code, lines = run_pytest(tmp_path, *args, ci="1", allow=[])
    assert code == 1, "\n".join(lines)
    assert HEADER in lines, "\n".join(lines)
    start = lines.index(HEADER) + 1
    assert sorted(lines[start : start + len(UNLISTED)]) == sorted(UNLISTED), "\n".join(lines)


def test_in_ci_only_the_skips_outside_the_allow_list_are_named(tmp_path):
    code, lines = run_pytest(tmp_path, ci="true", allow=ALLOW_ALL[1:])
    assert code == 1, "\n".join(lines)
    header = HEADER.replace("5 test(s)", "1 test(s)")
    assert lines[lines.index(header) + 1] == "SKIPPED test_skips.py::test_needs_a_gpu: no GPU here"


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_in_ci_allowed_skips_pass(tmp_path, args):
    code, lines = run_pytest(tmp_path, *args, ci="1", allow=ALLOW_ALL)
    assert code == 0, "\n".join(lines)
    assert not any(line.startswith("CI is set:") for line in lines)


def test_an_allowed_test_that_skips_for_another_reason_fails_in_ci(tmp_path):
    allow = [
        ("test_skips.py::test_needs_a_gpu", "no GPU driver", "the GPU test runs on the GPU runner"),
        *ALLOW_ALL[1:],
    ]
    code, lines = run_pytest(tmp_path, ci="1", allow=allow)
    assert code == 1
    assert "SKIPPED test_skips.py::test_needs_a_gpu: no GPU here" in lines


def test_without_ci_skips_are_only_skips(tmp_path):
    code, lines = run_pytest(tmp_path, ci=None, allow=[])
    assert code == 0, "\n".join(lines)
    assert not any(line.startswith("CI is set:") for line in lines)


def test_in_ci_deselected_tests_are_not_skips(tmp_path):
    code, lines = run_pytest(tmp_path, "-k", "test_runs", "test_skips.py", ci="1", allow=[])
    assert code == 0, "\n".join(lines)


def test_every_allowed_skip_names_an_existing_test_file_and_says_why():
    for entry in ALLOWED:
        assert (ROOT / entry.nodeid.split("::", 1)[0]).is_file(), entry
        assert entry.message.strip(), entry
        assert entry.why.strip(), entry
