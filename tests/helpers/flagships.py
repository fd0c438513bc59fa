"""What the flagship example DAGs are expected to do, shared by their ``dag.test()`` tests and the
production deployment's tests, so both assert the same outcomes."""

from __future__ import annotations

__all__ = ["GPU_TRAINING_STATES", "PR_IN_SYNC_STATES", "REFINE_NIGHT_1_STATES", "REFINE_TASKS"]

#: The tasks of ``example_nightly_refinement``'s ``refine`` group.
REFINE_TASKS = (
    "validate_data",
    "start",
    "drift",
    "refine",
    "validate_model",
    "gate",
    "promote",
    "keep_deployed",
    "outcome",
    "report",
    "record",
)
#: The first night (nothing deployed): no drift to check, nothing to keep.
REFINE_NIGHT_1_STATES = {**dict.fromkeys(REFINE_TASKS, "success"), "drift": "skipped", "keep_deployed": "skipped"}
#: ``example_pr_validation`` on a pull request whose head's lock is in sync.
PR_IN_SYNC_STATES = {
    "validate_data": "success",
    "in_sync": "success",
    "reproduce": "success",
    "report": "success",
    "on_a_pull_request": "success",
    "comment": "success",
    "outcome": "skipped",
}
#: ``example_gpu_training`` when its stages would run: launch, train on the instance, terminate.
GPU_TRAINING_STATES = dict.fromkeys(
    ("gpu.will_it_run", "gpu.launch", "gpu.train", "gpu.terminate", "summary"), "success"
)
