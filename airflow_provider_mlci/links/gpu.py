"""The "GPU instance" button of a task: the instance it launched, in the EC2 console.

The task stores the instance id and region in XCom (:meth:`GpuInstanceLink.persist`); the link
builds the URL from them when the UI draws the button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskInstanceKey
    from airflow.sdk import BaseOperator, Context

__all__ = ["GPU_INSTANCE_LINK_KEY", "GpuInstanceLink", "console_url"]

#: The XCom key the link's parameters are stored under.
GPU_INSTANCE_LINK_KEY = "mlci_gpu_instance_link"


def console_url(instance_id: str, region_name: str) -> str:
    """The EC2 console page of an instance (in the region's partition).

    :param instance_id: the instance
    :param region_name: its region
    """
    if region_name.startswith("cn-"):
        domain = "console.amazonaws.cn"
    elif region_name.startswith("us-gov-"):
        domain = "console.amazonaws-us-gov.com"
    else:
        domain = "console.aws.amazon.com"
    region = quote(region_name, safe="")
    return f"https://{domain}/ec2/home?region={region}#InstanceDetails:instanceId={quote(instance_id, safe='')}"


class GpuInstanceLink(BaseOperatorLink):
    """Link a task instance to the GPU instance it launched, in the EC2 console."""

    name = "GPU instance"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the console URL of the instance, or an empty string before the task launched one.

        :param operator: the task
        :param ti_key: the task instance
        """
        from airflow.providers.common.compat.sdk import XCom

        value = XCom.get_value(key=GPU_INSTANCE_LINK_KEY, ti_key=ti_key)
        if not isinstance(value, dict) or not value.get("instance_id") or not value.get("region_name"):
            return ""
        return console_url(value["instance_id"], value["region_name"])

    @staticmethod
    def persist(context: Context, operator: Any, *, instance_id: str, region_name: str) -> None:
        """Store the link's parameters in the task instance's XCom.

        :param context: the task's context
        :param operator: the task (nothing is stored when it pushes no XCom)
        :param instance_id: the instance
        :param region_name: its region
        """
        if not getattr(operator, "do_xcom_push", True):
            return
        context["ti"].xcom_push(
            key=GPU_INSTANCE_LINK_KEY, value={"instance_id": instance_id, "region_name": region_name}
        )
