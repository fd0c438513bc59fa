"""A hyperparameter sweep over the demo project: each trial a mapped task and a DVC experiment; the best one released.

The repository comes from the ``mlci_dvc_default`` connection. ``generate`` draws ``max_trials``
points of the space (seeded, so the same params give the same trials), pins the commit of
``rev`` and checks that the repository's ``.gto`` knows the stage to release to; each ``trial``
runs ``dvc exp run -S train.learning_rate=... -S train.epochs=...`` in its own checkout, two at a
time, pushes outputs and run-cache to the DVC remote and the experiment to the git remote, so that
in any clone::

    dvc exp pull origin --all-commits   # or: git fetch origin 'refs/exps/*:refs/exps/*'
    dvc exp show

lists every trial. ``leaderboard`` ranks them by accuracy, returns the best one and stores a
leaderboard report (the task's "Report" link).

Then the best trial is released like any other candidate. ``branch`` puts its experiment on the
branch ``sweep/<trial name>`` of the git remote (as ``dvc exp branch`` would; never force-pushed);
``gate`` compares that commit with the ``fraud-detector`` model on ``stage``, on the same frozen
evaluation data, rule by rule; ``promote`` registers the next minor version and moves the stage
with one GTO tag push, or is skipped when the gate refuses; ``outcome`` says which (``gto show``
says it too). Nothing is promoted when every trial failed or more than ``max_failed_trials`` did.
``best_report`` compares the best experiment with the commit the sweep started from, with the
leaderboard and the gate's decision as sections. Trigger with, for example,
``{"rev": "main", "max_trials": 3, "seed": 1, "stage": "prod"}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.task_groups.sweep import SweepPromotion, SweepTaskGroup

with DAG(
    dag_id="example_hyperparameter_sweep",
    description="Sweep the demo model's learning rate and epochs; every trial a DVC experiment; release the best.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "rev": Param("main", type="string", description="Branch, tag or commit the trials start from"),
        "max_trials": Param(8, type="integer", minimum=1, maximum=1024, description="The trial budget"),
        "seed": Param(0, type="integer", description="Seed of the random draws"),
        "stage": Param("prod", type="string", description="The stage the best trial is released to"),
    },
    tags=["mlci", "dvc", "sweep", "example"],
):
    sweep = SweepTaskGroup(
        group_id="sweep",
        # A mapping, or DVC's -S strings: ["train.learning_rate=loguniform(0.03,1.0)", "train.epochs=range(10,41,10)"]
        space={
            "train.learning_rate": {"loguniform": [0.03, 1.0]},
            "train.epochs": {"range": [10, 41, 10]},
        },
        objective="accuracy",
        goal="max",
        target=0.99,  # trials that start after one reaches it are skipped
        max_trials="{{ params.max_trials }}",
        seed="{{ params.seed }}",
        parallel_trials=2,
        max_failed_trials=1,
        rev="{{ params.rev }}",
        # The best trial must clear the floors and beat the deployed model on the same evaluation data.
        promote=SweepPromotion(
            model="fraud-detector",
            stage="{{ params.stage }}",
            rules={
                "accuracy": {"direction": "higher", "floor": 0.6, "min_improvement": 0.005},
                "logloss": {"direction": "lower", "floor": 0.8, "max_regression": 0.01},
            },
        ),
    )

    # The best experiment against the commit the sweep started from: metrics, params and plots,
    # with the leaderboard and the gate's decision as sections.
    best_report = MetricsReportOperator(
        task_id="best_report",
        rev="{{ ti.xcom_pull(task_ids='sweep.leaderboard')['best']['sha'] }}",
        baseline_rev="{{ ti.xcom_pull(task_ids='sweep.generate', key='baseline_sha') }}",
        include_tasks=["sweep.leaderboard", "sweep.gate"],
        title="Best trial of the sweep",
    )
    sweep >> best_report
