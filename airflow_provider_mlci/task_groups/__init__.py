"""Task groups that render external projects (DVC pipelines) as Airflow tasks."""
