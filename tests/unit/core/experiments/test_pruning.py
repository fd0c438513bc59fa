"""The pruning signal: DVCLive's per-step tables read as they grow, reported to the trial, the stage stopped once."""

from __future__ import annotations

import pytest

from airflow_provider_mlci.core.experiments.pruning import PruneOn, PruneWatch, read_steps
from airflow_provider_mlci.exceptions import MlciConfigError


def test_a_table_is_read_as_far_as_it_is_written(tmp_path):
    table = tmp_path / "loss.tsv"
    assert read_steps(table, "loss") == []  # not written yet
    table.write_text("timestamp\tstep\tloss\n1\t0\t0.9\n2\t1\t0.7\n3\t2\t0.")  # the writer is mid-line
    assert read_steps(table, "loss") == [(0, 0.9), (1, 0.7)]
    with pytest.raises(MlciConfigError, match=r"loss.tsv: no column 'val_loss' \(columns: timestamp, step, loss\)"):
        read_steps(table, "val_loss")


def test_prune_on_defaults_to_dvclive_s_file_of_the_objective_and_refuses_bad_input():
    assert PruneOn.of(None, metric="accuracy", goal="max") == PruneOn(
        file="dvclive/plots/metrics/accuracy.tsv", column="accuracy", direction="max"
    )
    assert PruneOn.of(("logs/loss.tsv", "loss", "minimize"), metric="accuracy", goal="max").direction == "min"
    with pytest.raises(MlciConfigError, match="must be a path inside the repository"):
        PruneOn.of(("../out.tsv", "loss", "min"), metric="a", goal="max")
    with pytest.raises(MlciConfigError, match="direction='down' is not 'max' or 'min'"):
        PruneOn.of({"file": "a.tsv", "column": "loss", "direction": "down"}, metric="a", goal="max")
    with pytest.raises(MlciConfigError, match=r"give \(file, column, direction\)"):
        PruneOn.of(("a.tsv", "loss"), metric="a", goal="max")


class Trial:
    """The two calls the watcher makes on an Optuna trial; prunes once a value is below ``floor``."""

    def __init__(self, floor):
        self.floor, self.reported = floor, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.reported[-1][1] < self.floor


def test_the_watcher_reports_new_steps_in_the_study_s_direction_and_stops_once(tmp_path):
    table = tmp_path / "loss.tsv"
    table.write_text("step\tloss\n0\t0.5\n1\t0.4\n")
    stops = []
    # Pruning on a loss (lower is better) for an accuracy objective: the study sees -loss.
    trial = Trial(floor=-0.75)
    watch = PruneWatch(table, PruneOn(file="loss.tsv", column="loss", direction="min"), goal="max", trial=trial,
                       stop=lambda: stops.append(1), interval=60)  # fmt: skip
    assert watch.look() is False
    assert trial.reported == [(0, -0.5), (1, -0.4)]
    table.write_text("step\tloss\n0\t0.5\n1\t0.4\n2\t0.3\n3\t0.2\n")
    assert watch.look() is False  # only the new steps are reported
    assert trial.reported == [(0, -0.5), (1, -0.4), (2, -0.3), (3, -0.2)]
    table.write_text(table.read_text() + "4\t0.8\n5\t0.9\n")
    assert watch.look() is True
    assert (watch.pruned, stops) == ((4, 0.8), [1])
    assert watch.look() is True  # nothing more is reported, nothing stopped twice
    assert (len(trial.reported), stops) == (5, [1])


def test_a_table_that_links_out_of_the_checkout_is_refused_never_read(tmp_path):
    from airflow_provider_mlci.exceptions import UnsafePathError

    secret = tmp_path / "worker-secret"
    secret.write_text("step\taccuracy\nhunter2\t0.1\n")
    root = tmp_path / "checkout"
    (root / "dvclive").mkdir(parents=True)
    (root / "dvclive" / "accuracy.tsv").symlink_to(secret)  # what an untrusted revision's stage may write
    on = PruneOn(file="dvclive/accuracy.tsv", column="accuracy", direction="max")
    trial, stops = Trial(floor=0.5), []
    watch = PruneWatch(root / on.file, on, goal="max", trial=trial, stop=lambda: stops.append(1), root=root)
    assert watch.look() is True
    assert isinstance(watch.error, UnsafePathError)
    assert "hunter2" not in str(watch.error)
    assert (trial.reported, stops) == ([], [])


def test_a_trial_that_ran_to_its_end_is_reported_but_never_pruned_after_the_fact(tmp_path):
    table = tmp_path / "acc.tsv"
    on = PruneOn(file="acc.tsv", column="acc", direction="max")
    trial, stops = Trial(floor=0.5), []
    watch = PruneWatch(table, on, goal="max", trial=trial, stop=lambda: stops.append(1), interval=60)
    with watch:
        table.write_text("step\tacc\n0\t0.6\n1\t0.3\n")  # written, and the stage ended, before any look
    assert trial.reported == [(0, 0.6), (1, 0.3)]  # the last steps still reach the study
    assert (watch.pruned, stops) == (None, [])
