"""Where a pipeline stage runs: on the worker (``local``) or on a GPU instance (``ec2``).

- :mod:`.spec`: :class:`~.spec.GpuInstanceSpec`, the instance a DAG asks for (light: DAG files import it);
- :mod:`.ec2`: launch (idempotent, with fallback over types, zones and markets), the boot script
  with its own deadline, terminate and reap, on plain boto3 clients;
- :mod:`.jobs`: the S3 mailbox through which a worker and the agent on an instance talk;
- :mod:`.remote`: the worker's side of a job; :mod:`.local`: a stage run on the worker itself.

Nothing here imports Airflow.
"""
