from __future__ import annotations

import inspect

import pytest

from airflow_provider_mlci import exceptions
from airflow_provider_mlci.exceptions import MlciError, error_class, redact_url

CLASSES = [
    obj
    for obj in vars(exceptions).values()
    if inspect.isclass(obj) and issubclass(obj, MlciError) and obj.__module__ == exceptions.__name__
]
RETRYABLE = {
    "DvcLockError",
    "DvcTransferError",
    "ForgeUnavailableError",
    "GitPushRejectedError",
    "GitUnavailableError",
    "GpuCapacityError",
    "RemoteJobInterruptedError",
}


def test_the_tree_covers_the_design():
    names = {cls.__name__ for cls in CLASSES}
    for needed in (
        "MlciConfigError",
        "DvcLockError",
        "DvcMissingObjectError",
        "DvcFileError",
        "GitRevisionNotFoundError",
        "GitRemoteError",
        "DataValidationError",
        "ModelValidationError",
        "GateRefusedError",
        "PromotionConflictError",
        "GpuProvisioningError",
        "GpuCapacityError",
        "RemoteJobFailedError",
        "RemoteJobInterruptedError",
    ):
        assert needed in names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_is_documented_drawn_and_flagged(cls):
    assert cls.__doc__, f"{cls.__name__} has no docstring"
    assert cls.__name__ in exceptions.__doc__, f"{cls.__name__} is missing from the tree in the module docstring"
    assert cls.retryable is (cls.__name__ in RETRYABLE)
    assert cls.__name__ in exceptions.__all__


def test_error_class_finds_ours_and_nothing_else():
    assert error_class("DvcLockError") is exceptions.DvcLockError
    assert error_class("ValueError") is MlciError
    assert error_class("redact_url") is MlciError
    assert error_class("no such thing") is MlciError


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cr3t@github.com/acme/repo.git", "https://user:***@github.com/acme/repo.git"),
        ("https://ghp_token123@github.com/acme/repo.git", "https://***@github.com/acme/repo.git"),
        ("ssh://git@github.com/acme/repo.git", "ssh://git@github.com/acme/repo.git"),
        ("git@github.com:acme/repo.git", "git@github.com:acme/repo.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        ("https://github.com/acme/repo.git", "https://github.com/acme/repo.git"),
    ],
)
def test_redact_url_hides_passwords_and_tokens(url, shown):
    assert redact_url(url) == shown
