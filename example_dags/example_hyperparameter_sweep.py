"""A hyperparameter sweep over the demo project: each trial is an Airflow mapped task and a DVC experiment.

The repository comes from the ``mlci_dvc_default`` connection. ``generate`` draws ``max_trials``
points of the space (seeded, so the same params give the same trials) and pins the commit of
``rev``; each ``trial`` runs ``dvc exp run -S train.learning_rate=... -S train.epochs=...`` in its
own checkout, two at a time, pushes outputs and run-cache to the DVC remote and the experiment
to the git remote, so that in any clone::

    dvc exp pull origin --all-commits   # or: git fetch origin 'refs/exps/*:refs/exps/*'
    dvc exp show

lists every trial. ``leaderboard`` ranks them by accuracy, returns the best one and stores a
leaderboard report (the task's "Report" link); ``best_report`` compares the best experiment's
metrics and plots with the commit the sweep started from. Trigger with, for example,
``{"rev": "main", "max_trials": 3, "seed": 1}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

with DAG(
    dag_id="example_hyperparameter_sweep",
    description="Sweep the demo model's learning rate and epochs; every trial a DVC experiment; rank them.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "rev": Param("main", type="string", description="Branch, tag or commit the trials start from"),
        "max_trials": Param(8, type="integer", minimum=1, maximum=1024, description="The trial budget"),
        "seed": Param(0, type="integer", description="Seed of the random draws"),
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
    )

    # The best experiment against the commit the sweep started from: metrics, params and plots.
    best_report = MetricsReportOperator(
        task_id="best_report",
        rev="{{ ti.xcom_pull(task_ids='sweep.leaderboard')['best']['sha'] }}",
        baseline_rev="{{ ti.xcom_pull(task_ids='sweep.generate', key='baseline_sha') }}",
        title="Best trial of the sweep",
    )
    sweep >> best_report
