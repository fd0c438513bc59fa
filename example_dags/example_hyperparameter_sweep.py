"""A hyperparameter sweep over the demo project: each trial a mapped task and a DVC experiment; the best one released.

The repository comes from the ``mlci_dvc_default`` connection. The sweep is adaptive: ``generate``
opens an Optuna study (``example_hyperparameter_sweep.sweep.<run>``; in the database of the
``[mlci] optuna_conn_id`` connection, else a journal file under the Airflow home, which only the
local executors share) and checks that the repository's ``.gto`` knows the stage to release to.
Each ``trial`` asks the study for its point as it starts, two at a time: the first is a
known-good point (enqueued: ``params.yaml``'s learning rate for 100 epochs), the next three are
random (seeded from ``seed`` and the trial's task), then TPE proposes each next point from how the
earlier ones did. The trial runs ``dvc exp run -S train.learning_rate=... -S train.epochs=...`` in
its own checkout and tells the study the evaluation's ``logloss`` (lower is better).

The demo's training logs each epoch's training ``logloss`` with DVCLive
(``dvclive/plots/metrics/logloss.tsv``); while a trial's stage runs, its task reads that table and
the median pruner stops the stage when the trial's loss at an epoch is worse than the median of
the finished trials' at the same epoch (after 10 epochs, once two trials have finished). A pruned
trial is recorded as pruned (at which epoch) and never ranked. Every trial that finished pushes
outputs and run-cache to the DVC remote and its experiment to the git remote, so that in any clone::

    dvc exp pull origin --all-commits   # or: git fetch origin 'refs/exps/*:refs/exps/*'
    dvc exp show

lists them. ``leaderboard`` ranks them by ``logloss``, returns the best one and stores a
leaderboard report (the task's "Report" link) that charts the study.

Then the best trial is released like any other candidate. ``branch`` puts its experiment on the
branch ``sweep/<trial name>`` of the git remote (as ``dvc exp branch`` would; never force-pushed);
``gate`` compares that commit with the ``fraud-detector`` model on ``stage``, on the same frozen
evaluation data, rule by rule; ``promote`` registers the next minor version and moves the stage
with one GTO tag push, or is skipped when the gate refuses; ``outcome`` says which (``gto show``
says it too). Nothing is promoted when every trial failed or more than ``max_failed_trials`` did.
``best_report`` compares the best experiment with the commit the sweep started from, with the
leaderboard and the gate's decision as sections. Trigger with, for example,
``{"rev": "main", "max_trials": 8, "seed": 1, "stage": "prod"}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.task_groups.sweep import SweepPromotion, SweepTaskGroup

with DAG(
    dag_id="example_hyperparameter_sweep",
    description="Tune the demo model's learning rate and epochs with TPE, pruning trials that lag; release the best.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "rev": Param("main", type="string", description="Branch, tag or commit the trials start from"),
        "max_trials": Param(8, type="integer", minimum=1, maximum=1024, description="The trial budget"),
        "seed": Param(0, type="integer", description="Seed of the study's sampler"),
        "stage": Param("prod", type="string", description="The stage the best trial is released to"),
    },
    tags=["mlci", "dvc", "sweep", "example"],
):
    sweep = SweepTaskGroup(
        group_id="sweep",
        # A mapping, or DVC's -S strings: ["train.learning_rate=loguniform(0.03,1.0)", "train.epochs=range(25,101,25)"]
        space={
            "train.learning_rate": {"loguniform": [0.03, 1.0]},
            "train.epochs": {"range": [25, 101, 25]},
        },
        objective="logloss",  # metrics.json's, on the frozen evaluation set
        goal="min",
        target=0.4,  # trials that start after one reaches it are skipped
        max_trials="{{ params.max_trials }}",
        seed="{{ params.seed }}",
        # Adaptive: random points first, then TPE; the study is in [mlci] optuna_conn_id's database (or a
        # journal file under the Airflow home with a local executor).
        search="tpe",
        sampler_options={"n_startup_trials": 4},
        enqueue=[{"train.learning_rate": 0.3, "train.epochs": 100}],  # a known-good point first
        # Stop a trial whose training loss at an epoch is worse than the median of the finished trials'
        # at that epoch, once two have finished and after 10 epochs. The values (prune_on's default):
        # DVCLive's table of the objective's name, dvclive/plots/metrics/logloss.tsv, which the demo's
        # training writes per epoch.
        pruner="median",
        pruner_options={"n_startup_trials": 2, "n_warmup_steps": 10},
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
