"""How to reach a repository and its DVC remote: URLs, names and credentials.

These objects are built by :class:`~airflow_provider_mlci.hooks.dvc.DvcHook` from an
``mlci_dvc`` connection (and the ``aws`` connection it names), or directly in tests. Secrets
never appear in their ``repr``; they reach git and DVC only through the environment of the
subprocess (see :meth:`GitAccess.environment` and :meth:`DvcRemoteAccess.environment`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_mlci.exceptions import MlciConfigError, redact_url

__all__ = ["DvcRemoteAccess", "GitAccess", "RepoAccess"]

_HOST_KEY_CHOICES = ("yes", "no", "accept-new")
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class GitAccess:
    """Where the git repository is and how to authenticate to it.

    Credentials never stay in the URL, where git would pass them on command lines and store
    them in ``.git/config``: an HTTP(S) URL's ``user:token@`` or ``token@`` moves into
    :attr:`username` and :attr:`password` (a bare ``token@`` is taken as the token unless a
    password is given, then it is the user name; fields given explicitly win), and an SSH URL
    with a password is refused (SSH takes keys only).

    :param url: an ``https://``, ``ssh://``, ``git@host:path``, ``file://`` URL or a local path
    :param username: user for HTTPS (with a token, often any non-empty name works)
    :param password: password or token for HTTPS
    :param private_key: an SSH private key (its text)
    :param key_file: path of an SSH private key on the worker
    :param strict_host_key_checking: ``accept-new`` (default), ``yes`` or ``no``
    :param known_hosts_file: a known_hosts file to use instead of the user's
    """

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    key_file: str | None = None
    strict_host_key_checking: str = "accept-new"
    known_hosts_file: str | None = None

    def __post_init__(self) -> None:
        if not self.url or not self.url.strip():
            raise MlciConfigError("The repository URL is empty: set the connection's host.")
        if self.url.startswith("-") or any(ch in self.url for ch in "\n\r\0"):
            raise MlciConfigError(f"The repository URL {redact_url(self.url)!r} is not a valid URL or path.")
        if self.strict_host_key_checking not in _HOST_KEY_CHOICES:
            raise MlciConfigError(
                f"strict_host_key_checking={self.strict_host_key_checking!r} is not one of {_HOST_KEY_CHOICES}."
            )
        if self.private_key and self.key_file:
            raise MlciConfigError("Give either private_key or key_file for SSH, not both.")
        url, user, secret = _credentials_in_url(self.url, has_password=bool(self.password))
        if url != self.url:
            object.__setattr__(self, "url", url)
            object.__setattr__(self, "username", self.username or user)
            object.__setattr__(self, "password", self.password or secret)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> GitAccess:
        """Build from a URL that may carry ``user:token@`` or ``token@``: the token moves out of the URL.

        :param url: the repository URL or path
        :param kwargs: the other fields; an explicit (non-empty) ``username`` or ``password``
            wins over the URL's
        """
        return cls(url=url, **kwargs)

    @property
    def display_url(self) -> str:
        """The URL as it may appear in logs and messages."""
        return redact_url(self.url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values to mask in any output."""
        return tuple(s for s in (self.password, self.private_key) if s)


def _credentials_in_url(url: str, *, has_password: bool) -> tuple[str, str | None, str | None]:
    """Split ``url`` into the URL without its user part, the user name and the secret.

    :param url: a URL or path
    :param has_password: a password was given besides: a bare ``name@`` is then a user name
    :raises MlciConfigError: an SSH URL carries a password
    """
    if "@" not in url or "://" not in url:
        return url, None, None
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None, None
    scheme = parts.scheme.lower()
    if scheme in ("ssh", "git+ssh", "ssh+git"):
        if ":" in userinfo:
            raise MlciConfigError(
                f"The SSH URL {redact_url(url)!r} carries a password: SSH takes a key only. Put the user alone in "
                "the URL and give the connection a private_key or key_file."
            )
        return url, None, None
    if scheme not in ("http", "https"):
        return url, None, None
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    user, colon, secret = userinfo.partition(":")
    user, secret = urllib.parse.unquote(user), urllib.parse.unquote(secret)
    if colon:
        return clean, user or None, secret or None
    if has_password:
        return clean, user or None, None
    return clean, None, user or None


@dataclass(frozen=True, kw_only=True)
class DvcRemoteAccess:
    """Which DVC remote to use and how to authenticate to it.

    Settings given here override the repository's committed ``.dvc/config``; with none, the
    repository's default remote is used as committed.

    :param remote: a remote name from the repository's config (default: its default remote)
    :param url: a URL for that remote, overriding the committed one (``s3://``, a path, ...)
    :param endpoint_url: an S3-compatible endpoint (MinIO, moto, ...)
    :param verify: TLS verification for S3: ``True``/``False`` or a CA bundle path
    :param verify_objects: re-hash every object downloaded from the remote and refuse corrupted
        ones (DVC's remote option ``verify``); ``None``: as the repository's config says, except
        for the reads a release decision rests on (see :meth:`verifying`)
    :param aws_access_key_id: S3 access key (from an Airflow ``aws`` connection)
    :param aws_secret_access_key: S3 secret key
    :param aws_session_token: S3 session token
    :param region_name: S3 region
    """

    remote: str | None = None
    url: str | None = None
    endpoint_url: str | None = None
    verify: bool | str | None = None
    verify_objects: bool | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    region_name: str | None = None

    def __post_init__(self) -> None:
        if self.remote is not None and not _REMOTE_NAME.match(self.remote):
            raise MlciConfigError(f"dvc_remote={self.remote!r} is not a valid DVC remote name.")
        if self.url is not None and (self.url.startswith("-") or any(ch in self.url for ch in "\n\r\0")):
            raise MlciConfigError(f"dvc_remote_url={redact_url(self.url)!r} is not a valid URL or path.")

    #: The name given to a remote that exists only in the connection.
    DEFAULT_NAME = "mlci"

    def verifying(self) -> DvcRemoteAccess:
        """This access with object verification on, unless ``verify_objects`` is set explicitly.

        For the reads a release decision rests on: the model checks', the gate's and the
        promotion's inputs. A connection's explicit ``verify_objects=False`` still wins; the
        repository's own ``verify`` setting does not, since a revision is untrusted.
        """
        return self if self.verify_objects is not None else replace(self, verify_objects=True)

    def dvc_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``dvc.repo.Repo`` (``remote``, ``remote_config``): no secrets."""
        remote_config: dict[str, Any] = {}
        if self.url:
            remote_config["url"] = self.url
        if self.endpoint_url:
            remote_config["endpointurl"] = self.endpoint_url
        if self.verify is not None:
            remote_config["ssl_verify"] = self.verify
        if self.verify_objects is not None:
            remote_config["verify"] = self.verify_objects
        if self.region_name and (self.url or "").startswith("s3://"):
            remote_config["region"] = self.region_name
        remote = self.remote
        if remote_config and remote is None and self.url:
            remote = self.DEFAULT_NAME
        overrides: dict[str, Any] = {}
        if remote:
            overrides["remote"] = remote
        if remote_config:
            overrides["remote_config"] = remote_config
        return overrides

    def environment(self) -> dict[str, str]:
        """Environment variables that carry the S3 credentials to DVC."""
        env = {
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_SESSION_TOKEN": self.aws_session_token,
            "AWS_DEFAULT_REGION": self.region_name,
        }
        return {k: v for k, v in env.items() if v}

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values to mask in any output."""
        return tuple(s for s in (self.aws_secret_access_key, self.aws_session_token) if s)


@dataclass(frozen=True, kw_only=True)
class RepoAccess:
    """A repository and its DVC remote.

    :param git: how to reach the git repository
    :param dvc: which DVC remote to use and how
    """

    git: GitAccess
    dvc: DvcRemoteAccess = field(default_factory=DvcRemoteAccess)

    @classmethod
    def local(cls, path: str, **dvc: Any) -> RepoAccess:
        """Access to a repository on this machine, without credentials.

        :param path: the repository's path (a bare repository is fine)
        :param dvc: fields of :class:`DvcRemoteAccess`
        """
        return cls(git=GitAccess(url=path), dvc=DvcRemoteAccess(**dvc))

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every value to mask in any output."""
        return self.git.secrets + self.dvc.secrets
