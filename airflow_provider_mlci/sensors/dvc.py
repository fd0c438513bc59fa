"""Sensors on DVC-tracked data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseSensorOperator, PokeReturnValue

from airflow_provider_mlci.operators.base import airflow_failures

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.hooks.dvc import DvcHook

__all__ = ["DvcDataChangedSensor"]


class DvcDataChangedSensor(BaseSensorOperator):
    """Wait until DVC-tracked data differs from what this sensor last saw; then emit an Asset event.

    What is compared (``watch``): ``tracked``, the md5s DVC recorded for ``targets`` at the head
    of ``rev`` (``.dvc`` files or ``dvc.lock`` outputs, read from git: nothing is downloaded), or
    ``source``, the current ETag (or content md5) of the sources of ``dvc import-url`` targets.
    A commit that only touches the data (same content) does not fire.

    The sensor emits an event on ``asset`` carrying ``{"digest", "sha", "items"}``, so other DAGs
    can be scheduled on new data, and reads the last digest back from that asset's events (its
    inlet events): the first run, with no event yet, fires. While waiting it defers to the
    triggerer (``deferrable=True``, the default) and holds no worker slot.

    :param targets: tracked paths (``data/raw.csv``) or their ``.dvc`` files (templated)
    :param asset: the Asset to emit on and remember with (default: ``x-dvc-data://<conn>/<targets>``, in
        normal form: see :mod:`airflow_provider_mlci.assets`)
    :param rev: the branch to watch (templated); ``HEAD`` is the default branch
    :param watch: ``tracked`` or ``source``
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the cache root for the repository's mirror; default: ``[mlci] cache_dir``
    :param deferrable: wait in the triggerer rather than in a worker slot
    :param poke_interval: seconds between looks (default 60: each look is a git fetch)
    """

    template_fields: Sequence[str] = ("targets", "rev")
    ui_color = "#945dd6"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        targets: str | Sequence[str],
        asset: Asset | None = None,
        rev: str = "HEAD",
        watch: str = "tracked",
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        deferrable: bool = True,
        poke_interval: float = 60.0,
        **kwargs: Any,
    ) -> None:
        targets = [targets] if isinstance(targets, str) else list(targets)
        if asset is None:
            asset = Asset(_default_uri(dvc_conn_id, targets))
        kwargs["inlets"] = [*kwargs.get("inlets", []), asset]
        kwargs["outlets"] = [*kwargs.get("outlets", []), asset]
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.targets = targets
        self.asset = asset
        self.rev = rev
        self.watch = watch
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> DvcHook:
        """The hook for the repository's connection."""
        from airflow_provider_mlci.hooks.dvc import DvcHook

        return DvcHook(self.dvc_conn_id, cache_dir=self.cache_dir)

    def _look(self) -> dict[str, Any]:
        from airflow_provider_mlci.core.data.watch import Watch, fingerprint
        from airflow_provider_mlci.core.repo.git import check_rev
        from airflow_provider_mlci.core.runtime.process import CommandRunner

        check_rev(self.rev)
        return fingerprint(
            self.hook.get_access(),
            self.targets,
            rev=self.rev,
            watch=Watch(self.watch),
            cache_dir=self.hook.cache_dir,
            runner=CommandRunner(log=self.log),
        ).to_json()

    def last_digest(self, context: Context) -> str | None:
        """The digest of the asset's latest event (``None``: no event yet)."""
        events = context["inlet_events"][self.asset]
        if not len(events):
            return None
        extra = events[-1].extra or {}
        digest = extra.get("digest") or (extra.get("payload") or {}).get("digest")
        return digest if isinstance(digest, str) else None

    def _fired(self, context: Context, look: dict[str, Any]) -> dict[str, Any]:
        context["outlet_events"][self.asset].extra = {
            "digest": look["digest"],
            "sha": look["sha"],
            "items": look["items"],
        }
        self.log.info("New data at %s: %s", look["sha"][:12], look["items"])
        return look

    def execute(self, context: Context) -> Any:
        with airflow_failures():
            last = self.last_digest(context)
            look = self._look()
        if look["digest"] != last:
            return self._fired(context, look)
        self.log.info("Data unchanged since the last event (%s); waiting", last[:12] if last else None)
        if not self.deferrable:
            self._last = last
            return super().execute(context)
        from airflow_provider_mlci.triggers.dvc import DvcDataChangedTrigger

        self.defer(
            trigger=DvcDataChangedTrigger(
                dvc_conn_id=self.dvc_conn_id,
                targets=self.targets,
                rev=self.rev,
                watch=self.watch,
                last_digest=last,
                poll_interval=self.poke_interval,
                cache_dir=self.cache_dir,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )
        return None

    def poke(self, context: Context) -> PokeReturnValue | bool:
        with airflow_failures():
            look = self._look()
        if look["digest"] == getattr(self, "_last", None):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._fired(context, look))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: emit the event, or raise the error it reported."""
        if event.get("status") == "error":
            from airflow_provider_mlci.exceptions import error_class

            with airflow_failures():
                raise error_class(event.get("type", "MlciError"))(event.get("message", "the data watch failed"))
        return self._fired(context, event)


def _default_uri(dvc_conn_id: str, targets: Sequence[str]) -> str:
    """``x-dvc-data://<conn>/<target>+<target>`` in normal form."""
    from airflow_provider_mlci.assets import DATA_SCHEME, dvc_asset_uri
    from airflow_provider_mlci.exceptions import MlciConfigError

    try:
        return dvc_asset_uri(dvc_conn_id, "+".join(targets), scheme=DATA_SCHEME)
    except ValueError as exc:
        raise MlciConfigError(f"DvcDataChangedSensor: no default Asset for {targets!r} ({exc}); give asset=.") from exc
