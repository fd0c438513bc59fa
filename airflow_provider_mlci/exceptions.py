"""Errors raised by airflow-provider-mlci.

Every error is an :class:`MlciError`. Each class says whether retrying the task can help
(``retryable``); the operator boundary turns a non-retryable error into Airflow's
``AirflowFailException`` so that Airflow does not retry a deterministic failure. ``core/``
raises these without importing Airflow, and third-party errors (git, DVC, boto3, pandera) are
re-raised as one of these with ``raise ... from exc``.

The tree::

    MlciError
    ├── MlciConfigError                     bad arguments, connection or setting
    │   ├── ConnectionNotFoundError         the named Airflow connection does not exist
    │   ├── SandboxUnavailableError         the sandbox was asked for and cannot run here
    │   ├── SchemaLoadError                 a data schema that does not import or parse
    │   ├── SecretInUserDataError           a GPU instance's boot script would carry a credential
    │   └── UnsafePathError                 a path, or a link in the repository, that leads out of it
    ├── WorkspaceError                      the worker's cache or checkout is unusable
    ├── GitError
    │   ├── GitRemoteError                  the remote refuses us: credentials, no such repository
    │   │   └── GitUnavailableError         the remote failed or is unreachable: 5xx, DNS, timeout (retryable)
    │   ├── GitRevisionNotFoundError        a revision that is not in the repository
    │   ├── GitConflictError                our change and the branch's conflict in a file
    │   ├── GitPushRejectedError            the branch or tag moved under our push: a race, redone (retryable)
    │   └── GitPushRefusedError             the remote's own rule refused a push: a hook, a protected ref
    ├── DvcError
    │   ├── DvcLockError                    another DVC process holds the lock (retryable)
    │   ├── DvcFileError                    dvc.yaml, dvc.lock, params or a .dvc file is invalid
    │   ├── DvcStageNotFoundError           a target that is no stage of the pipeline
    │   ├── DvcMissingObjectError           data the lock file names is in no cache or remote
    │   │   └── DvcCorruptObjectError       the remote's copy failed verification: its bytes do not match its hash
    │   ├── DvcTransferError                a push or pull failed in transit (retryable)
    │   ├── DvcStageFailedError             a stage's command exited non-zero
    │   ├── DvcOutOfSyncError               dvc.lock does not match the code, params or data
    │   └── DvcPipelineMismatchError        the pipeline at the revision is not the one rendered
    ├── DatasetError
    │   ├── DatasetNotFoundError            no dataset at the path or URL
    │   └── DatasetFormatError              an unknown format, or a file that cannot be read whole
    ├── DataValidationError                 data broke its schema or drifted too far
    ├── ModelValidationError                a model failed its contract, dependencies or thresholds
    ├── GateRefusedError                    the candidate model is not better than the deployed one
    │   └── StageOrderError                 the version skipped a stage the stage order requires first
    ├── PromotionConflictError              the champion changed between the gate and the promotion
    ├── ForgeError                          the code host (GitHub) refused a comment or status
    │   ├── ForgeAuthError                  a token that is missing, invalid or lacks a permission
    │   ├── ForgeNotFoundError              no such repository, pull request, commit or comment
    │   └── ForgeUnavailableError           server error, rate limit or network failure (retryable)
    ├── GpuProvisioningError                an instance could not be launched
    │   ├── GpuCapacityError                no capacity for any type and zone tried (retryable)
    │   └── GpuInstanceLeakError            the reaper found instances that should be gone
    └── RemoteJobError
        ├── RemoteJobFailedError            the job on the instance failed
        └── RemoteJobInterruptedError       the instance went away under the job (retryable)

Messages name the file, column, stage, revision or URL at fault. URLs in messages never carry
credentials (see :func:`redact_url`).
"""

from __future__ import annotations

import re

__all__ = [
    "ConnectionNotFoundError",
    "DataValidationError",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DvcCorruptObjectError",
    "DvcError",
    "DvcFileError",
    "DvcLockError",
    "DvcMissingObjectError",
    "DvcOutOfSyncError",
    "DvcPipelineMismatchError",
    "DvcStageFailedError",
    "DvcStageNotFoundError",
    "DvcTransferError",
    "ForgeAuthError",
    "ForgeError",
    "ForgeNotFoundError",
    "ForgeUnavailableError",
    "GateRefusedError",
    "GitConflictError",
    "GitError",
    "GitPushRefusedError",
    "GitPushRejectedError",
    "GitRemoteError",
    "GitRevisionNotFoundError",
    "GitUnavailableError",
    "GpuCapacityError",
    "GpuInstanceLeakError",
    "GpuProvisioningError",
    "MlciConfigError",
    "MlciError",
    "ModelValidationError",
    "PromotionConflictError",
    "RemoteJobError",
    "RemoteJobFailedError",
    "RemoteJobInterruptedError",
    "SandboxUnavailableError",
    "SchemaLoadError",
    "SecretInUserDataError",
    "StageOrderError",
    "UnsafePathError",
    "WorkspaceError",
    "error_class",
    "redact_url",
]


class MlciError(Exception):
    """Base of every error this provider raises."""

    #: Whether running the task again may succeed without anyone changing anything.
    retryable: bool = False


class MlciConfigError(MlciError):
    """An argument, connection field or provider setting is invalid."""


class ConnectionNotFoundError(MlciConfigError):
    """The Airflow connection named by an operator or hook does not exist."""


class SandboxUnavailableError(MlciConfigError):
    """The sandbox for a revision's own code was asked for and cannot run on this worker
    (bubblewrap missing, or the kernel refuses namespaces): nothing is run without it."""


class WorkspaceError(MlciError):
    """The worker's cache folder or a task's checkout cannot be created or used."""


class GitError(MlciError):
    """A git operation failed."""


class GitRemoteError(GitError):
    """The remote refused us: a wrong or missing credential, no access, or no such repository.

    Retrying does not help; the transient kind is :class:`GitUnavailableError`."""


class GitUnavailableError(GitRemoteError):
    """The remote failed or could not be reached: a 5xx or 429 answer, a timeout, a refused or
    reset connection, a host name that did not resolve. Raised after a few quick tries."""

    retryable = True


class GitRevisionNotFoundError(GitError):
    """A branch, tag or commit that the repository does not have."""


class GitConflictError(GitError):
    """A file this task changed was changed differently on the branch it commits to."""


class GitPushRejectedError(GitError):
    """Another writer moved the branch or took the tag between our read and our push, every time
    we tried; a later try starts from the new state."""

    retryable = True


class GitPushRefusedError(GitError):
    """The remote refused a push by a rule of its own: a pre-receive or update hook, a protected
    branch or tag, a permission. Not a race: the same push is refused again, so it is not retried."""


class DvcError(MlciError):
    """A DVC operation failed."""


class DvcLockError(DvcError):
    """Another DVC process holds the repository lock."""

    retryable = True


class DvcFileError(DvcError):
    """``dvc.yaml``, ``dvc.lock``, a params file or a ``.dvc`` file is malformed or inconsistent."""


class DvcStageNotFoundError(DvcError):
    """A target names no stage or output of the pipeline."""


class DvcMissingObjectError(DvcError):
    """Data that the lock file or a ``.dvc`` file names is in neither the cache nor the remote."""


class DvcCorruptObjectError(DvcMissingObjectError):
    """The DVC remote holds an object whose bytes do not hash to its name (changed or truncated
    in place): it failed verification and was not used."""


class DvcTransferError(DvcError):
    """A push to or pull from a DVC remote failed in transit."""

    retryable = True


class DvcStageFailedError(DvcError):
    """A pipeline stage's command exited with a non-zero status."""


class DvcOutOfSyncError(DvcError):
    """``dvc.lock`` does not match the code, params and data of its revision, or the remote
    lacks data it names."""


class DvcPipelineMismatchError(DvcError):
    """The stages at the revision differ from the ones the DAG was rendered from."""


class SchemaLoadError(MlciConfigError):
    """A data schema could not be loaded: an import path that does not import, or a schema file
    that does not parse."""


class SecretInUserDataError(MlciConfigError):
    """A GPU instance's boot script (EC2 user data, readable by anyone who may describe the
    instance) would carry what looks like a credential. The message names where and what kind
    (a GitHub token, a private key...), never the value; nothing was launched."""


class UnsafePathError(MlciConfigError):
    """A path read from a checkout leads out of the repository: an absolute path, one that climbs
    out with ``..``, or a symbolic link (to a file or a folder) that the revision holds and that
    points outside the checkout. The message names the path as written in the repository, never
    what lies at the link's target."""


class DatasetError(MlciError):
    """A dataset to validate could not be found or read."""


class DatasetNotFoundError(DatasetError):
    """Nothing exists at the dataset's path or URL (at the revision asked for)."""


class DatasetFormatError(DatasetError):
    """The dataset's format is unknown, or the file is unreadable or truncated."""


class DataValidationError(MlciError):
    """A dataset broke its schema, or drifted beyond its thresholds."""


class ModelValidationError(MlciError):
    """A model failed its I/O contract, its dependency check or its score thresholds."""


class GateRefusedError(MlciError):
    """The candidate model did not beat the deployed one by the required margins."""


class StageOrderError(GateRefusedError):
    """The version was never on a stage that the stage order puts before the one it is promoted to."""


class PromotionConflictError(MlciError):
    """The model on the stage changed between the gate's decision and the promotion."""


class ForgeError(MlciError):
    """The code host (GitHub) refused to create or update a comment or a commit status."""


class ForgeAuthError(ForgeError):
    """The code host refused the connection's token: missing, invalid, expired or without the permission."""


class ForgeNotFoundError(ForgeError):
    """The repository, pull request, commit or comment does not exist, or the token cannot see it."""


class ForgeUnavailableError(ForgeError):
    """The code host failed (5xx), limited our rate (429, secondary limit) or could not be reached."""

    retryable = True


class GpuProvisioningError(MlciError):
    """A GPU instance could not be launched."""


class GpuCapacityError(GpuProvisioningError):
    """No capacity for any of the instance types and zones tried."""

    retryable = True


class GpuInstanceLeakError(GpuProvisioningError):
    """The reaper found GPU instances of ours that should be gone (expired, or their run ended)."""


class RemoteJobError(MlciError):
    """A job sent to a remote instance did not complete."""


class RemoteJobFailedError(RemoteJobError):
    """The job on the instance ran and failed."""


class RemoteJobInterruptedError(RemoteJobError):
    """The instance went away (spot reclaim, deadline, termination) before the job ended."""

    retryable = True


def error_class(name: str) -> type[MlciError]:
    """Return the error class called ``name``, or :class:`MlciError` if there is none.

    Used to re-raise, in the parent process, an error that a subprocess reported by name.

    :param name: the class name, for example ``"DvcLockError"``
    """
    candidate = globals().get(name)
    if isinstance(candidate, type) and issubclass(candidate, MlciError):
        return candidate
    return MlciError


_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@]*@)")


def redact_url(url: str) -> str:
    """Return ``url`` without the password or token that its user part may carry.

    ``https://user:token@host/repo.git`` becomes ``https://user:***@host/repo.git``;
    ``https://token@host/x`` becomes ``https://***@host/x``; an SSH user name is kept; other
    URLs and paths come back unchanged.

    :param url: a URL or local path
    """
    match = _USERINFO.match(url)
    if not match:
        return url
    user = match.group("userinfo")[:-1]
    if ":" in user:
        hidden = f"{user.split(':', 1)[0]}:***"
    elif match.group("scheme").lower().startswith(("ssh", "git+ssh")):
        hidden = user  # an SSH user name such as "git" is no secret
    else:
        hidden = "***"
    return f"{match.group('scheme')}{hidden}@{url[match.end() :]}"
