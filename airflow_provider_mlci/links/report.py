"""The "Report" button of a task: where the task stored its report or failure-case table.

The task pushes the location to XCom under :data:`REPORT_URI_KEY`; the link only reads it back,
so nothing is computed when the UI draws the button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskInstanceKey
    from airflow.sdk import BaseOperator

__all__ = ["REPORT_URI_KEY", "MlciReportLink"]

#: The XCom key a task stores its report's location under.
REPORT_URI_KEY = "mlci_report_uri"


class MlciReportLink(BaseOperatorLink):
    """Link a task instance to the report it stored, as the reports UI plugin shows it."""

    name = "Report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the reports page of this task instance, or an empty string before it stored one.

        The page is served by the provider's UI plugin in the api-server (``/mlci/task-report/...``),
        which reads the report wherever it is stored (a local folder or ``s3://``).

        :param operator: the task
        :param ti_key: the task instance
        """
        from urllib.parse import quote

        from airflow.providers.common.compat.sdk import XCom

        uri = XCom.get_value(key=REPORT_URI_KEY, ti_key=ti_key)
        if not isinstance(uri, str):
            return ""
        parts = "/".join(quote(str(p), safe="") for p in (ti_key.dag_id, ti_key.run_id, ti_key.task_id))
        return f"/mlci/task-report/{parts}?map_index={ti_key.map_index}"
