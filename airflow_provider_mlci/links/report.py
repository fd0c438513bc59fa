"""The "Report" button of a task: where the task stored its report or failure-case table.

The task pushes the location to XCom under :data:`REPORT_URI_KEY`; the link only reads it back,
so nothing is computed when the UI draws the button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["REPORT_URI_KEY", "MlciReportLink", "storage_uri"]

#: The XCom key a task stores its report's location under.
REPORT_URI_KEY = "mlci_report_uri"


def storage_uri(path: object) -> str:
    """The URI of an ``ObjectStoragePath`` without the connection id its text carries.

    ``str()`` of a path made with ``conn_id="aws_reports"`` reads ``s3://aws_reports@bucket/key``;
    this gives ``s3://bucket/key`` (and ``file:///folder`` for local paths).

    :param path: an ``airflow.sdk.ObjectStoragePath``
    """
    protocol = getattr(path, "protocol", "") or "file"
    inner = str(getattr(path, "path", path))
    return f"{protocol}://{inner}" if protocol != "file" or inner.startswith("/") else str(path)


class MlciReportLink(BaseOperatorLink):
    """Link a task instance to the report it stored (an ``s3://`` or ``file://`` location)."""

    name = "Report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the stored location, or an empty string before the task stored one.

        :param operator: the task
        :param ti_key: the task instance
        """
        from airflow.sdk.execution_time.xcom import XCom

        uri = XCom.get_value(key=REPORT_URI_KEY, ti_key=ti_key)
        if not isinstance(uri, str):
            return ""
        if uri.startswith("s3://"):
            bucket, _, key = uri[len("s3://") :].partition("/")
            return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
        return uri
