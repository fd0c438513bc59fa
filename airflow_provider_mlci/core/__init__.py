"""Domain logic, free of Airflow: workspaces, DVC operations, and what later issues add."""
