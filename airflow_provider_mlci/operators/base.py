"""What every operator of this provider shares.

- :func:`airflow_failures`: the operator boundary, where our errors become Airflow task failures
  of the right kind (a deterministic error is not retried);
- :class:`DvcHookMixin`: the operator's DVC hook; :class:`DvcWorkspaceMixin`: the arguments and
  checkout of operators that work in a checkout of the repository at a revision;
- :class:`GpuHookMixin` and :func:`terminate_without_waiting`: the operator's GPU hook, and
  terminating what a task launched when it fails or is killed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_mlci.exceptions import MlciError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.dvc.ops import StageHandoff
    from airflow_provider_mlci.core.repo.workspace import Workspace
    from airflow_provider_mlci.core.runtime.process import CommandRunner
    from airflow_provider_mlci.hooks.dvc import DvcHook
    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

__all__ = [
    "DVC_PURPLE",
    "MODEL_BLUE",
    "SWEEP_COLOR",
    "DvcHookMixin",
    "DvcWorkspaceMixin",
    "GpuHookMixin",
    "airflow_failures",
    "map_index_of",
    "rendered_int",
    "store_json_report",
    "terminate_without_waiting",
]

#: The colour of the operators that run DVC in a checkout (in the Airflow UI's graph).
DVC_PURPLE = "#945dd6"
#: The colour of a sweep's operators.
SWEEP_COLOR = "#f0b429"
#: The colour of the operators that check, gate and release models.
MODEL_BLUE = "#1565c0"


def map_index_of(ti: Any) -> int:
    """The task instance's map index: ``-1`` for a task that is not mapped (also where it says ``None``).

    :param ti: the task instance
    """
    value = getattr(ti, "map_index", -1)
    return -1 if value is None else int(value)


def rendered_int(value: Any, name: str) -> int | None:
    """A whole-number argument after rendering (templates render to strings): ``"8"`` is 8,
    ``""`` / ``"None"`` / ``None`` is ``None``.

    :param value: the argument's value
    :param name: the argument's name, for the message
    :raises MlciConfigError: anything else
    """
    from airflow_provider_mlci.exceptions import MlciConfigError

    if value is None or value in ("", "None"):
        return None
    if isinstance(value, bool):
        raise MlciConfigError(f"{name}={value!r} is not a whole number.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MlciConfigError(f"{name}={value!r} is not a whole number.") from None


@contextlib.contextmanager
def airflow_failures() -> Iterator[None]:
    """Re-raise a non-retryable :class:`MlciError` as ``AirflowFailException`` (no retries).

    Retryable errors pass through unchanged, so Airflow retries them as configured. The
    original error stays attached as the cause and its class name leads the message.
    """
    try:
        yield
    except MlciError as exc:
        if exc.retryable:
            raise
        from airflow.providers.common.compat.sdk import AirflowFailException

        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


class GpuHookMixin:
    """The operator's one :class:`~airflow_provider_mlci.hooks.gpu.GpuInstanceHook`, made when first
    used from its ``aws_conn_id`` and ``region_name`` (as the Amazon provider's operators make
    their ``hook``); the task's identity stays with the operator and goes into each call."""

    aws_conn_id: str | None
    region_name: str | None

    @cached_property
    def hook(self) -> GpuInstanceHook:
        """The hook for the ``aws`` connection, in :meth:`hook_region`."""
        from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

        return GpuInstanceHook(aws_conn_id=self.aws_conn_id, region_name=self.hook_region())

    def hook_region(self) -> str | None:
        """The region the hook works in (``None``: the connection's)."""
        return self.region_name


def terminate_without_waiting(
    hook: GpuInstanceHook, instance_ids: Sequence[str], log: Any, *, others: str
) -> list[str]:
    """Terminate ``instance_ids`` without waiting for them to stop; a failure is logged, not raised.

    :param hook: the hook of the instances' region
    :param instance_ids: the instances (duplicates and empty ids are dropped)
    :param log: the operator's logger
    :param others: what terminates them if this fails, for the log line ("the teardown and the reaper")
    :return: the instances asked to terminate (none when there were none, or the request failed)
    """
    ids = list(dict.fromkeys(i for i in instance_ids if i))
    if not ids:
        return []
    try:
        hook.terminate(ids)
    except Exception:
        log.exception("Could not terminate %s (%s will)", ids, others)
        return []
    return ids


class DvcHookMixin:
    """The operator's one :class:`~airflow_provider_mlci.hooks.dvc.DvcHook`, made when first used
    from its ``dvc_conn_id`` and ``cache_dir``."""

    dvc_conn_id: str
    cache_dir: str | None
    #: Verify what is downloaded from the DVC remote unless the connection sets ``verify_objects``:
    #: on for the operators whose reads a release decision rests on (model checks, gates, promotion).
    verify_inputs_by_default: ClassVar[bool] = False

    @cached_property
    def hook(self) -> DvcHook:
        """The hook for the repository's connection."""
        from airflow_provider_mlci.hooks.dvc import DvcHook

        return DvcHook(self.dvc_conn_id, cache_dir=self.cache_dir, verify_by_default=self.verify_inputs_by_default)


class DvcWorkspaceMixin(DvcHookMixin):
    """Arguments and plumbing every operator here shares.

    :param rev: branch, tag, commit id or expression (templated); ``HEAD`` is the default branch
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: the provider setting ``[mlci] cache_dir``
    :param sandbox: how the revision's own code runs (``None``: the provider setting
        ``[mlci] sandbox``; ``True``/``False``; or a mapping of
        :class:`~airflow_provider_mlci.core.runtime.sandbox.SandboxConfig` fields such as ``env``,
        ``timeout_s``, ``memory_mb``, ``network``)
    """

    rev: str
    python: str | None = None
    sandbox: bool | Mapping[str, Any] | None = None
    _runner: CommandRunner | None = None

    def _with_workspace(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.runtime.process import CommandRunner

        self._runner = CommandRunner(log=self.log)  # type: ignore[attr-defined]
        with airflow_failures():
            self.check_arguments()
            with self.hook.open_workspace(
                self.rev, runner=self._runner, python=self.python, sandbox=self.sandbox
            ) as workspace:
                result = self.work(workspace, context)
                return {"repo": workspace.access.git.display_url, "rev": self.rev, "sha": workspace.sha, **result}

    def check_arguments(self) -> None:
        """Check rendered arguments before any expensive work (raise :class:`MlciError`)."""

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        """Do the operator's work in the checked-out workspace; return its part of the XCom."""
        raise NotImplementedError

    def on_kill(self) -> None:
        """Stop the running git or DVC process (and the stage command it runs)."""
        if self._runner is not None:
            self._runner.stop()

    def handoff_from_tasks(self, context: Context, task_ids: Sequence[str]) -> StageHandoff | None:
        """Merge the handoffs that the tasks ``task_ids`` returned (key ``handoff`` of their XCom)."""
        from airflow_provider_mlci.core.dvc.ops import StageHandoff

        if not task_ids:
            return None
        values = context["ti"].xcom_pull(task_ids=list(task_ids))
        if not isinstance(values, list):
            values = [values]
        return StageHandoff.merged((value or {}).get("handoff") for value in values)


def store_json_report(context: Context, name: str, payload: Mapping[str, Any], title: str) -> None:
    """Write ``<name>.json`` and ``<name>.md`` to the task's report folder; the "Report" link opens it.

    :param context: the task's context
    :param name: the file names' stem and the outcome's kind (``decision``, ``verdict``)
    :param payload: what to write
    :param title: the Markdown heading
    """
    import json

    from airflow_provider_mlci.core.dvc.ops import json_safe
    from airflow_provider_mlci.core.reports.html import section_for
    from airflow_provider_mlci.report_store import store_task_report

    files = {
        f"{name}.json": (json.dumps(json_safe(payload), indent=2, sort_keys=True) + "\n").encode(),
        f"{name}.md": f"# {title}\n\n{section_for(title, payload).markdown}\n".encode(),
    }
    store_task_report(context, files, {"kind": name, name: payload})
