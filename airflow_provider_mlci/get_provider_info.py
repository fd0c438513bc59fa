"""Provider metadata read by Airflow's providers manager (no imports: it is read at start-up)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: its connection types, hooks, operators and settings."""
    return {
        "package-name": "airflow-provider-mlci",
        "name": "MLCI",
        "description": "CI/CD for machine learning: DVC pipelines as tasks, data and model validation, "
        "GPU instances that always die, and safe model releases.",
        "state": "not-ready",  # Alpha (setup.cfg classifiers); "ready" with Beta or later
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "DVC",
                "external-doc-url": "https://dvc.org/doc",
                "tags": ["software"],
            },
            {
                "integration-name": "pandera",
                "external-doc-url": "https://pandera.readthedocs.io",
                "tags": ["software"],
            },
            {
                "integration-name": "GTO",
                "external-doc-url": "https://dvc.org/doc/gto",
                "tags": ["software"],
            },
            {
                "integration-name": "GPU instances (Amazon EC2)",
                "external-doc-url": "https://aws.amazon.com/ec2/instance-types/#Accelerated_Computing",
                "tags": ["aws"],
            },
            {
                "integration-name": "GitHub",
                "external-doc-url": "https://docs.github.com/en/rest",
                "tags": ["software"],
            },
            {
                "integration-name": "Optuna",
                "external-doc-url": "https://optuna.readthedocs.io",
                "tags": ["software"],
            },
        ],
        "hooks": [
            {"integration-name": "DVC", "python-modules": ["airflow_provider_mlci.hooks.dvc"]},
            {"integration-name": "GPU instances (Amazon EC2)", "python-modules": ["airflow_provider_mlci.hooks.gpu"]},
            {"integration-name": "GitHub", "python-modules": ["airflow_provider_mlci.hooks.forge"]},
            {"integration-name": "Optuna", "python-modules": ["airflow_provider_mlci.hooks.study"]},
        ],
        "operators": [
            {
                "integration-name": "DVC",
                "python-modules": [
                    "airflow_provider_mlci.operators.dvc",
                    "airflow_provider_mlci.operators.pipeline",
                    "airflow_provider_mlci.operators.repro",
                    "airflow_provider_mlci.operators.report",
                    "airflow_provider_mlci.operators.sweep",
                    "airflow_provider_mlci.operators.sweep_results",
                    "airflow_provider_mlci.operators.sweep_trial",
                ],
            },
            {
                "integration-name": "pandera",
                "python-modules": [
                    "airflow_provider_mlci.operators.drift",
                    "airflow_provider_mlci.operators.validation",
                ],
            },
            {
                "integration-name": "GTO",
                "python-modules": [
                    "airflow_provider_mlci.operators.approval",
                    "airflow_provider_mlci.operators.gate",
                    "airflow_provider_mlci.operators.model",
                    "airflow_provider_mlci.operators.refine",
                    "airflow_provider_mlci.operators.release",
                ],
            },
            {
                "integration-name": "GPU instances (Amazon EC2)",
                "python-modules": ["airflow_provider_mlci.operators.gpu"],
            },
            {"integration-name": "GitHub", "python-modules": ["airflow_provider_mlci.operators.forge"]},
        ],
        "extra-links": [
            "airflow_provider_mlci.links.report.MlciReportLink",
            "airflow_provider_mlci.links.gpu.GpuInstanceLink",
        ],
        "sensors": [
            {"integration-name": "DVC", "python-modules": ["airflow_provider_mlci.sensors.dvc"]},
            {
                "integration-name": "GPU instances (Amazon EC2)",
                "python-modules": ["airflow_provider_mlci.sensors.gpu"],
            },
        ],
        "triggers": [
            {"integration-name": "DVC", "python-modules": ["airflow_provider_mlci.triggers.dvc"]},
            {
                "integration-name": "GPU instances (Amazon EC2)",
                "python-modules": ["airflow_provider_mlci.triggers.gpu", "airflow_provider_mlci.triggers.compute"],
            },
        ],
        "asset-uris": [
            {
                "schemes": ["x-dvc"],
                "handler": "airflow_provider_mlci.assets.sanitize_uri",
                "factory": "airflow_provider_mlci.assets.create_asset",
                "to_openlineage_converter": "airflow_provider_mlci.assets.convert_asset_to_openlineage",
            },
            {
                "schemes": ["x-dvc-data"],
                "handler": "airflow_provider_mlci.assets.sanitize_uri",
                "to_openlineage_converter": "airflow_provider_mlci.assets.convert_asset_to_openlineage",
            },
        ],
        "connection-types": [
            {
                "connection-type": "mlci_dvc",
                "hook-class-name": "airflow_provider_mlci.hooks.dvc.DvcHook",
                "hook-name": "DVC repository",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "Repository URL or path",
                        "login": "Username (HTTPS)",
                        "password": "Token or password (HTTPS)",
                    },
                    "placeholders": {
                        "host": "https://github.com/acme/fraud-model.git",
                        "login": "x-access-token",
                        "extra": '{"dvc_remote": "storage", "aws_conn_id": "aws_default"}',
                    },
                },
                "conn-fields": {
                    "private_key": {
                        "label": "SSH private key",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "key_file": {
                        "label": "SSH private key file on the worker",
                        "schema": {"type": ["string", "null"]},
                    },
                    "strict_host_key_checking": {
                        "label": "SSH StrictHostKeyChecking (accept-new, yes, no)",
                        "schema": {"type": ["string", "null"], "default": "accept-new"},
                    },
                    "known_hosts_file": {
                        "label": "SSH known_hosts file on the worker",
                        "schema": {"type": ["string", "null"]},
                    },
                    "dvc_remote": {
                        "label": "DVC remote name (default: the repository's default remote)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "dvc_remote_url": {
                        "label": "DVC remote URL (overrides the committed one)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "aws_conn_id": {
                        "label": "AWS connection for an S3 remote",
                        "schema": {"type": ["string", "null"]},
                    },
                    "endpoint_url": {
                        "label": "S3 endpoint URL (MinIO and other S3-compatible stores)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "verify": {
                        "label": "TLS verification for S3: true, false or a CA bundle path",
                        "schema": {"type": ["string", "boolean", "null"]},
                    },
                    "verify_objects": {
                        "label": "Re-hash objects pulled from the DVC remote, refuse corrupted ones (unset: "
                        "on for model checks, gates and promotions; false: off everywhere)",
                        "schema": {"type": ["boolean", "null"]},
                    },
                },
            }
        ],
        "config": {
            "mlci": {
                "description": "Settings of airflow-provider-mlci.",
                "options": {
                    "cache_dir": {
                        "description": "Folder on each worker for repository mirrors, task checkouts and the "
                        "shared DVC cache. Empty means ~/.cache/airflow-provider-mlci.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/cache/airflow-mlci",
                        "default": "",
                    },
                    "cache_max_size_gb": {
                        "description": "Cap on each worker's DVC cache. When a task ends, the least recently used "
                        "objects and run-cache entries go until it is under 80 % of the cap (they can be pulled "
                        "again), even while other tasks run: what their checkouts use is kept. 0 means no cap.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "200",
                        "default": "50",
                    },
                    "sandbox": {
                        "description": "Run a revision's own code (stage commands, model loading) under bubblewrap "
                        "in new user, PID, mount and network namespaces: no network, none of the worker's files, "
                        "secrets or processes; and keep an untrusted run's DVC cache and run-cache apart from what "
                        "trusted runs reuse. Operators and task groups take sandbox= to override it. Needs "
                        "bubblewrap and user namespaces; without them a sandboxed task fails, never runs unconfined.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                    "stage_env": {
                        "description": "Comma-separated names of worker environment variables that stage commands "
                        "and model loading may see, beyond PATH, HOME, locale, CUDA and DVC's own. Nothing else "
                        "of the worker's environment reaches them.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "WANDB_MODE,HF_HUB_OFFLINE",
                        "default": "",
                    },
                    "reports_dir": {
                        "description": "Where reports and failure-case tables go: a folder or an object storage "
                        "URL (s3://bucket/prefix, read with reports_conn_id). Use shared storage when workers are "
                        "separate machines. Empty means the folder mlci-reports in AIRFLOW_HOME.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://ml-reports/airflow",
                        "default": "",
                    },
                    "compute_job_base": {
                        "description": "Where GPU instances and workers exchange jobs: an s3://bucket/prefix "
                        "that the workers' aws connection and the instances' instance profile can both read and "
                        "write. Each instance gets its own folder (its mailbox) under it. Needed only for the ec2 "
                        "compute backend.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://ml-jobs/airflow-mlci",
                        "default": "",
                    },
                    "compute_backend": {
                        "description": "Where task groups that take compute=None run their heavy stages: local "
                        "(on the worker itself) or ec2 (on a GPU instance launched for the run and terminated after; "
                        "needs compute_job_base and an aws connection). Read when the DAG file is parsed.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "ec2",
                        "default": "local",
                    },
                    "gpu_prices": {
                        "description": "USD per hour of GPU instance types, as a JSON object, used when AWS gives no "
                        "price: the spot price history has none at the launch, or the AWS Price List API (asked for "
                        "on-demand prices) lists none or cannot be reached. The teardown task records each "
                        "instance's cost (XCom gpu_cost); a type with no price at all gets no cost. Empty means no "
                        "table.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": '{"g4dn.xlarge": 0.526, "g5.xlarge": 1.006}',
                        "default": "",
                    },
                    "reports_conn_id": {
                        "description": "The connection object storage reports_dir is read and written with "
                        "(for example an aws connection). Empty means the storage's default.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "aws_default",
                        "default": "",
                    },
                    "report_retention_days": {
                        "description": "How many days a stored report is kept whole. After that its files (report, "
                        "plots, tables) are removed, but each task's outcome.json (what it decided, when, which "
                        "files it had) is kept. Applied when a task writes a report, at most once an hour per "
                        "process. 0 keeps reports forever.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "30",
                        "default": "90",
                    },
                    "study_retention_days": {
                        "description": "How many days an adaptive sweep keeps the Optuna studies of its past runs "
                        "(<dag_id>.<group_id>.<run>; a study every run continues, resume=True, is never removed). "
                        "Older ones are deleted from the study database when the sweep's generate task runs. "
                        "0 keeps them forever.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "30",
                        "default": "90",
                    },
                    "optuna_conn_id": {
                        "description": "The connection (postgres, mysql or sqlite) to the database adaptive sweeps "
                        "keep their Optuna studies in when a SweepTaskGroup names no optuna_conn_id: a database of "
                        "its own that every worker and the triggerer reach, never Airflow's metadata database. "
                        "Empty means a journal file under AIRFLOW_HOME, which only the local executors can share; "
                        "set it on Celery, Kubernetes or Edge workers.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "optuna_db",
                        "default": "",
                    },
                    "report_templates": {
                        "description": "A folder whose templates replace the packaged ones of the same name: "
                        "report.html.j2 (with section.html.j2 and table.html.j2) for the report.html tasks write, "
                        "and base.html.j2 (the layout), macros.html.j2, index.html.j2, dag.html.j2, run.html.j2, "
                        "folder.html.j2 and message.html.j2 for the reports pages of the UI. Templates are Jinja2 "
                        "with autoescape. Read by the workers that write reports and by the api-server. Empty means "
                        "the packaged templates only.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/mlci-templates",
                        "default": "",
                    },
                },
            }
        },
    }
