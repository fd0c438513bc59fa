from __future__ import annotations

import logging
import sys
import threading
import time

import pytest

from airflow_provider_mlci.core.runtime.process import CommandRunner, CommandStoppedError
from airflow_provider_mlci.testing.procs import alive, wait_dead


def test_output_is_streamed_line_by_line_with_secrets_masked(caplog):
    runner = CommandRunner(log=logging.getLogger("test.process"), secrets=["hunter2secret"])
    with caplog.at_level(logging.INFO, logger="test.process"):
        result = runner.run([sys.executable, "-c", "print('one'); print('token=hunter2secret'); print('three')"])
    assert result.returncode == 0
    assert [r.getMessage() for r in caplog.records] == ["one", "token=***", "three"]
    assert result.tail == ("one", "token=***", "three")
    assert "hunter2secret" not in caplog.text


def test_capture_returns_stdout_and_logs_stderr(caplog):
    runner = CommandRunner(log=logging.getLogger("test.process"))
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    with caplog.at_level(logging.INFO, logger="test.process"):
        result = runner.run([sys.executable, "-c", code], capture=True)
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert [r.getMessage() for r in caplog.records] == ["err"]


def test_input_text_reaches_stdin():
    runner = CommandRunner()
    result = runner.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], input_text="abc", capture=True
    )
    assert result.stdout.strip() == "ABC"


def test_stop_kills_the_whole_process_group_and_refuses_new_commands(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 120 & echo $! > {pidfile}; wait"
    runner = CommandRunner(grace_seconds=1)
    errors: list[BaseException] = []

    def _run():
        try:
            runner.run(["sh", "-c", script])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=_run)
    thread.start()
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert alive(grandchild)
    started = time.monotonic()
    runner.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert len(errors) == 1
    assert isinstance(errors[0], CommandStoppedError)
    assert wait_dead(grandchild)
    with pytest.raises(CommandStoppedError):
        runner.run(["true"])


def test_stop_without_a_command_is_harmless():
    runner = CommandRunner()
    runner.stop()
    with pytest.raises(CommandStoppedError):
        runner.run(["true"])


def test_a_wait_between_tries_ends_as_soon_as_the_task_is_stopped():
    runner = CommandRunner()
    threading.Timer(0.1, runner.stop).start()
    started = time.monotonic()
    with pytest.raises(CommandStoppedError):
        runner.sleep(30)
    assert time.monotonic() - started < 5


def test_private_folders_of_dead_owners_go_and_the_others_stay(tmp_path):
    import fcntl
    import os
    import subprocess

    from airflow_provider_mlci.core.runtime.process import private_tempdir, remove_abandoned_tempdirs

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"mlci-git-{gone.pid}-k1ll3d"
    (dead / "ssh-1-abc").mkdir(parents=True)
    (dead / "ssh-1-abc" / "id_key").write_text("key")
    (dead / ".owner").write_text("")
    # A dead pid here, but its lock is held: an owner in another pid namespace.
    elsewhere = tmp_path / f"mlci-git-{gone.pid}-3lsewh3re"
    elsewhere.mkdir()
    (elsewhere / ".owner").write_text("")
    unknown = tmp_path / "mlci-dvc-no-pid-here"
    unknown.mkdir()
    fd = os.open(elsewhere / ".owner", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with private_tempdir("git", parent=tmp_path) as mine:
            assert mine.name.startswith(f"mlci-git-{os.getpid()}-")
            assert (mine.stat().st_mode & 0o777) == 0o700
            assert remove_abandoned_tempdirs(tmp_path) == [dead]
            assert mine.exists()
        assert not mine.exists()
    finally:
        os.close(fd)
    assert elsewhere.exists()
    assert unknown.exists()


def test_a_stop_that_comes_while_the_command_starts_still_stops_it(tmp_path, monkeypatch):
    """stop() between the command's start and the runner's noting it found no command to stop."""
    import subprocess

    runner = CommandRunner(grace_seconds=1)
    real_popen = subprocess.Popen

    def popen_then_stop(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        runner.stop()  # the command runs, the runner has not noted it yet
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen_then_stop)
    started = time.monotonic()
    with pytest.raises(CommandStoppedError):
        runner.run(["sh", "-c", "sleep 120 & wait"])
    assert time.monotonic() - started < 10
