"""Airflow plugins of the provider: :mod:`.reports` serves the stored reports in the Airflow UI."""
