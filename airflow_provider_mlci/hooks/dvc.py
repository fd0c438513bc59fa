"""The ``mlci_dvc`` connection: a git repository holding a DVC project, and its DVC remote.

Fields, after Airflow's own git connection:

- ``host``: the repository URL (``https://``, ``ssh://``, ``git@host:path``) or a local path;
  use the JSON form of ``AIRFLOW_CONN_*`` (the URI form needs the URL encoded);
- ``login`` / ``password``: user and token for HTTPS (a token written in the host's user part,
  ``https://<token>@host/...`` or ``https://user:<token>@host/...``, is taken out of the URL
  and used the same way: it never reaches a command line or ``.git/config``);
- extra ``private_key`` (key text) or ``key_file`` (a path on the worker) for SSH, with
  ``strict_host_key_checking`` (``accept-new`` by default) and ``known_hosts_file``;
- extra ``dvc_remote``: a remote name from the repository's ``.dvc/config`` (default: its
  default remote); ``dvc_remote_url``: a URL that overrides that remote's; ``aws_conn_id``:
  an Airflow ``aws`` connection whose credentials (and region, endpoint) reach an S3 remote;
  ``endpoint_url``; ``verify`` (TLS for S3: ``true``, ``false`` or a CA bundle path);
  ``verify_objects`` (re-hash downloaded objects and refuse corrupted ones; unset, the model
  checks, gates and promotions verify anyway and other tasks follow the repository's config;
  ``false`` turns it off everywhere).

Settings on the connection override the repository's committed DVC config. Secrets go to git
and DVC through the environment of their subprocess only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_mlci.exceptions import ConnectionNotFoundError, MlciConfigError

if TYPE_CHECKING:
    from airflow_provider_mlci.core.repo.access import RepoAccess
    from airflow_provider_mlci.core.repo.workspace import Workspace
    from airflow_provider_mlci.core.runtime.process import CommandRunner
    from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig

__all__ = ["DvcHook"]

_KNOWN_EXTRAS = frozenset(
    {
        "private_key",
        "key_file",
        "strict_host_key_checking",
        "known_hosts_file",
        "dvc_remote",
        "dvc_remote_url",
        "aws_conn_id",
        "endpoint_url",
        "verify",
        "verify_objects",
    }
)


class DvcHook(BaseHook):
    """Reach a git + DVC repository described by an ``mlci_dvc`` connection.

    :param dvc_conn_id: the connection's id
    :param cache_dir: the worker cache root; default: the provider setting ``[mlci] cache_dir``
    :param verify_by_default: verify what is downloaded from the DVC remote unless the
        connection sets ``verify_objects`` (for the reads a release decision rests on)
    """

    conn_name_attr = "dvc_conn_id"
    default_conn_name = "mlci_dvc_default"
    conn_type = "mlci_dvc"
    hook_name = "DVC repository"

    def __init__(
        self,
        dvc_conn_id: str = default_conn_name,
        *,
        cache_dir: str | None = None,
        verify_by_default: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dvc_conn_id = dvc_conn_id
        self._cache_dir = cache_dir
        self.verify_by_default = verify_by_default

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's hidden fields, labels and placeholders, for Airflow 3.1.

        Airflow 3.2+ read them from ``ui-field-behaviour`` in the provider info, which is their one source.
        """
        behaviour = _connection_type_info(cls.conn_type)["ui-field-behaviour"]
        return {key.replace("-", "_"): value for key, value in behaviour.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields, for Airflow 3.1 with the FAB provider's form library.

        Airflow 3.2+ read them from ``conn-fields`` in the provider info, which is their one source;
        3.1 without ``wtforms`` shows the extra as JSON only (this raises ``ImportError``, as Airflow expects).
        """
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from wtforms import PasswordField, StringField

        widgets: dict[str, Any] = {}
        for name, field in _connection_type_info(cls.conn_type)["conn-fields"].items():
            secret = field["schema"].get("format") == "password"
            widget = BS3PasswordFieldWidget() if secret else BS3TextFieldWidget()
            default = field["schema"].get("default")
            widgets[name] = (PasswordField if secret else StringField)(field["label"], widget=widget, default=default)
        return widgets

    @property
    def cache_dir(self) -> str:
        """The worker cache root: the hook's argument, else ``[mlci] cache_dir``, else the default."""
        if self._cache_dir:
            return self._cache_dir
        from airflow_provider_mlci import settings

        return settings.cache_dir()

    @property
    def max_cache_bytes(self) -> int:
        """The worker's DVC cache cap from ``[mlci] cache_max_size_gb`` (0: no cap)."""
        from airflow_provider_mlci import settings

        return settings.cache_max_bytes()

    def get_access(self) -> RepoAccess:
        """Read the connection (and the ``aws`` connection it names) into a :class:`RepoAccess`.

        :raises ConnectionNotFoundError: the connection does not exist
        :raises MlciConfigError: a field is invalid
        """
        from airflow.providers.common.compat.sdk import AirflowNotFoundException
        from airflow.sdk.log import mask_secret

        from airflow_provider_mlci.core.repo.access import DvcRemoteAccess, GitAccess, RepoAccess

        try:
            conn = self.get_connection(self.dvc_conn_id)
        except AirflowNotFoundException as exc:
            raise ConnectionNotFoundError(
                f"The Airflow connection {self.dvc_conn_id!r} does not exist: create an 'mlci_dvc' connection "
                "whose host is the repository URL or path."
            ) from exc
        extra = conn.extra_dejson
        unknown = sorted(set(extra) - _KNOWN_EXTRAS)
        if unknown:
            self.log.warning("Connection %s: ignoring unknown extra fields %s", self.dvc_conn_id, unknown)
        if not conn.host:
            raise MlciConfigError(f"The connection {self.dvc_conn_id!r} has no host: set it to the repository URL.")
        for secret in (conn.password, extra.get("private_key")):
            if secret:
                mask_secret(secret)
        git = GitAccess.from_url(
            conn.host,
            username=conn.login or None,
            password=conn.password or None,
            private_key=extra.get("private_key") or None,
            key_file=extra.get("key_file") or None,
            strict_host_key_checking=extra.get("strict_host_key_checking") or "accept-new",
            known_hosts_file=extra.get("known_hosts_file") or None,
        )
        for secret in git.secrets:  # a token that came in the host's user part too
            mask_secret(secret)
        dvc_fields: dict[str, Any] = {
            "remote": extra.get("dvc_remote") or None,
            "url": extra.get("dvc_remote_url") or None,
            "endpoint_url": extra.get("endpoint_url") or None,
            "verify": _parse_verify(extra.get("verify"), self.dvc_conn_id),
            "verify_objects": _parse_bool(extra.get("verify_objects"), "verify_objects", self.dvc_conn_id),
        }
        aws_conn_id = extra.get("aws_conn_id")
        if aws_conn_id:
            dvc_fields.update(_aws_settings(aws_conn_id, dvc_fields))
        dvc = DvcRemoteAccess(**dvc_fields)
        return RepoAccess(git=git, dvc=dvc.verifying() if self.verify_by_default else dvc)

    @contextlib.contextmanager
    def open_workspace(
        self,
        rev: str,
        *,
        runner: CommandRunner | None = None,
        python: str | None = None,
        sandbox: bool | Mapping[str, Any] | SandboxConfig | None = None,
    ) -> Iterator[Workspace]:
        """Check out ``rev`` of the connection's repository into a private folder on this worker.

        :param rev: a branch, tag, commit id or expression; ``HEAD`` is the default branch
        :param runner: runs git and DVC; keep it to stop them from ``on_kill``
        :param python: the interpreter (or virtualenv folder) stage commands run with
        :param sandbox: how the revision's own code runs: ``None`` as ``[mlci] sandbox`` says,
            ``True``/``False``, or a mapping of
            :class:`~airflow_provider_mlci.core.runtime.sandbox.SandboxConfig` fields
        """
        from airflow_provider_mlci import settings
        from airflow_provider_mlci.core.repo.workspace import Workspace
        from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig, check_available

        confined = SandboxConfig.of(sandbox, settings.sandbox())
        if confined.enabled:
            check_available()  # before any clone: a worker that cannot confine code says so at once
        access = self.get_access()
        with Workspace.open(
            access,
            rev,
            cache_dir=self.cache_dir,
            runner=runner,
            python=python,
            max_cache_bytes=self.max_cache_bytes,
            sandbox=confined,
        ) as workspace:
            yield workspace

    def test_connection(self) -> tuple[bool, str]:
        """Check that the repository answers (``git ls-remote``), for the UI's Test button."""
        from airflow_provider_mlci.core.repo.git import Git
        from airflow_provider_mlci.core.runtime.process import CommandRunner
        from airflow_provider_mlci.exceptions import MlciError

        try:
            access = self.get_access()
            with Git(access.git, CommandRunner(log=self.log)) as git:
                git.check(["ls-remote", "--exit-code", "--", access.git.url, "HEAD"], capture=True, remote=True)
        except MlciError as exc:
            return False, str(exc)
        return True, f"Reached {access.git.display_url}"


def _parse_verify(value: Any, conn_id: str) -> bool | str | None:
    if value is None or value == "" or isinstance(value, bool):
        return value if isinstance(value, bool) else None
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    if text.startswith("-") or "\n" in text:
        raise MlciConfigError(f"Connection {conn_id!r}: 'verify' must be true, false or a CA bundle path.")
    return text


def _parse_bool(value: Any, name: str, conn_id: str) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise MlciConfigError(f"Connection {conn_id!r}: {name!r} must be true or false, not {value!r}.")


def _aws_settings(aws_conn_id: str, current: dict[str, Any]) -> dict[str, Any]:
    """Credentials, region and endpoint from an Airflow ``aws`` connection (imports boto3)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.common.compat.sdk import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        # The AWS hook falls back to ambient credentials for a missing connection; a named one must exist.
        BaseHook.get_connection(aws_conn_id)
    except AirflowNotFoundException as exc:
        raise ConnectionNotFoundError(
            f"The AWS connection {aws_conn_id!r} named in 'aws_conn_id' does not exist."
        ) from exc
    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    credentials = hook.get_credentials()
    conn_config = hook.conn_config
    for secret in (credentials.secret_key, credentials.token):
        if secret:
            mask_secret(secret)
    settings: dict[str, Any] = {
        "aws_access_key_id": credentials.access_key,
        "aws_secret_access_key": credentials.secret_key,
        "aws_session_token": credentials.token,
        "region_name": hook.conn_region_name,
    }
    if not current.get("endpoint_url") and conn_config.endpoint_url:
        settings["endpoint_url"] = conn_config.endpoint_url
    if current.get("verify") is None and conn_config.verify is not None:
        settings["verify"] = conn_config.verify
    return settings


def _connection_type_info(conn_type: str) -> dict[str, Any]:
    """The provider info's entry of ``conn_type`` (``connection-types``)."""
    from airflow_provider_mlci.get_provider_info import get_provider_info

    (entry,) = [e for e in get_provider_info()["connection-types"] if e["connection-type"] == conn_type]
    return entry
