"""Has a dataset drifted from an earlier version? :class:`DataDriftCheckOperator`.

Re-exported by :mod:`airflow_provider_mlci.operators.validation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import airflow_failures
from airflow_provider_mlci.operators.dataset import PANDERA_GREEN, DatasetMixin, check_mode, is_url

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["DataDriftCheckOperator"]


class DataDriftCheckOperator(DatasetMixin, BaseOperator):
    """Compare a dataset at ``rev`` with the same dataset at ``baseline_rev``.

    Fails (``mode="fail"``) or warns (``mode="warn"``) when columns were added, removed or
    retyped, when the row count changed beyond its bounds, or when a column's distribution
    shifted (PSI over baseline deciles or categories, and the Kolmogorov-Smirnov statistic on
    numeric columns) beyond the thresholds. Returns the comparison as JSON (see
    :class:`~airflow_provider_mlci.core.data.drift.DriftReport`).

    :param dataset: a path inside the repository, or a URL (templated)
    :param baseline_rev: the revision to compare with (templated)
    :param rev: the revision to check (templated); default: the default branch
    :param baseline_dataset: the baseline's path or URL if it is not ``dataset`` (templated)
    :param columns: compare only these columns
    :param psi: PSI above which a column has drifted (default 0.2)
    :param ks: KS statistic above which a numeric column has drifted (default 0.1)
    :param min_row_ratio: the new row count must be at least this fraction of the old (0.5)
    :param max_row_ratio: and at most this multiple of it (2.0)
    :param mode: ``"fail"`` or ``"warn"``
    :param skip_without_baseline: skip the task (instead of failing) when ``baseline_rev`` renders
        empty, e.g. a baseline read from the registry before any model was deployed
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param format: ``csv``, ``parquet`` or ``jsonl``; default: from the file name
    :param conn_id: the connection for URL datasets
    :param chunk_bytes: read at most this many bytes of a file at once
    :param cache_dir: the worker cache root; default ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("dataset", "baseline_rev", "rev", "baseline_dataset")
    ui_color = PANDERA_GREEN
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        dataset: str,
        baseline_rev: str | None = None,
        rev: str | None = None,
        baseline_dataset: str | None = None,
        columns: Sequence[str] | None = None,
        psi: float = 0.2,
        ks: float = 0.1,
        min_row_ratio: float = 0.5,
        max_row_ratio: float = 2.0,
        mode: str = "fail",
        skip_without_baseline: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        format: str | None = None,
        conn_id: str | None = None,
        chunk_bytes: int | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.skip_without_baseline = skip_without_baseline
        self.baseline_rev = baseline_rev
        self.rev = rev
        self.baseline_dataset = baseline_dataset
        self.columns = columns
        self.psi = psi
        self.ks = ks
        self.min_row_ratio = min_row_ratio
        self.max_row_ratio = max_row_ratio
        self.mode = mode
        self.dvc_conn_id = dvc_conn_id
        self.format = format
        self.conn_id = conn_id
        self.chunk_bytes = chunk_bytes
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.data import drift
        from airflow_provider_mlci.core.data.tabular import TableFormat
        from airflow_provider_mlci.exceptions import DataValidationError, MlciConfigError

        if self.skip_without_baseline and not self.baseline_rev and not self.baseline_dataset:
            from airflow.providers.common.compat.sdk import AirflowSkipException

            raise AirflowSkipException(f"No baseline revision to compare {self.dataset} with: no drift check.")
        with airflow_failures():
            mode = check_mode(self.mode)
            thresholds = drift.DriftThresholds(
                psi=self.psi, ks=self.ks, min_row_ratio=self.min_row_ratio, max_row_ratio=self.max_row_ratio
            )
            baseline_dataset = self.baseline_dataset or self.dataset
            if baseline_dataset == self.dataset and is_url(self.dataset):
                raise MlciConfigError(
                    f"DataDriftCheckOperator on {self.dataset}: a URL has no revisions; give baseline_dataset."
                )
            if baseline_dataset == self.dataset and not self.baseline_rev:
                raise MlciConfigError(
                    f"DataDriftCheckOperator on {self.dataset}: give baseline_rev or baseline_dataset."
                )
            for name in (self.dataset, baseline_dataset):
                TableFormat.of(name, self.format)
            profiles = {}
            for side, name, rev in (
                ("baseline", baseline_dataset, self.baseline_rev),
                ("current", self.dataset, self.rev),
            ):
                with self.open_dataset(name, rev) as (reader, label):
                    self.log.info("Profiling the %s version: %s", side, label)
                    profiles[side] = (
                        label,
                        drift.profile_chunks(reader.chunks(), columns=self.columns, sample_size=thresholds.sample_size),
                    )
            report = drift.compare_profiles(profiles["baseline"][1], profiles["current"][1], thresholds)
            summary = {"dataset": profiles["current"][0], "baseline": profiles["baseline"][0], **report.to_json()}
            self.record_dataset_lineage(self.rev, {}, None)
            for name, stats in report.columns.items():
                self.log.info("  %s: %s", name, stats)
            if not report.drifted:
                self.log.info("%s: no drift against %s", summary["dataset"], summary["baseline"])
                return summary
            message = f"{summary['dataset']} drifted from {summary['baseline']}: " + "; ".join(report.failures)
            self.log.warning("%s", message)
            if mode == "fail":
                raise DataValidationError(message)
            return summary
