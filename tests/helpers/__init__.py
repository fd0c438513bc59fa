"""Helpers shared by test modules; fixtures live in the nearest ``conftest.py`` instead.

Test modules import helpers from here, never from one another. What benchmarks or users' own
tests need too (an Airflow cluster, the moto server, process checks) is in
:mod:`airflow_provider_mlci.testing`, which ships in the wheel.

- :mod:`~tests.helpers.airflow_records`: any XCom a DAG run left in the metadata database.
- :mod:`~tests.helpers.browser`: headless Chromium driven by Selenium (Debian's chromium-driver).
- :mod:`~tests.helpers.demo_project`: train the demo project to a number of epochs.
- :mod:`~tests.helpers.dvc_corpus`: DVC projects written the way DVC's docs teach.
- :mod:`~tests.helpers.dvc_remote`: what a local DVC remote holds; access to a project.
- :mod:`~tests.helpers.ec2_instances`: stand-ins for the EC2 instances moto does not run.
- :mod:`~tests.helpers.flagships`: the flagship example DAGs' expected outcomes (dag.test() and deployment).
- :mod:`~tests.helpers.github_server`: a stand-in for GitHub's REST API.
- :mod:`~tests.helpers.gpu_runs`: the GPU DAG runs' connection keys; our instances left.
- :mod:`~tests.helpers.log_lines`: whole-line checks of task and trigger logs (errors, logged messages).
- :mod:`~tests.helpers.moto_ec2`: clients and checks on moto's EC2; error injection.
- :mod:`~tests.helpers.skips`: with ``CI`` set, a skip or xfail outside a reviewed allow-list fails the run.
- :mod:`~tests.helpers.task_instance`: a task instance stand-in for operators outside a DAG run.
- :mod:`~tests.helpers.tools`: programs some tests need: skipped without them, failed in CI.
"""
