"""The DVC child's hand-off unpacking, member by member (written without ``TarFile.extract``'s
``filter=``, which Python 3.11 before 3.11.4, Debian 12's, lacks)."""

from __future__ import annotations

import os
import tarfile

import pytest

from airflow_provider_mlci.core.dvc.child import _place
from airflow_provider_mlci.exceptions import MlciConfigError


def member(name: str, *, link: str | None = None, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
    return info


def test_files_and_links_are_placed_replacing_what_was_there(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    _place(tmp_path, tmp_path / "out", member("out", mode=0o755), b"#!/bin/sh\n")  # a folder becomes a file
    assert (tmp_path / "out").read_bytes() == b"#!/bin/sh\n"
    assert os.access(tmp_path / "out", os.X_OK)
    _place(tmp_path, tmp_path / "sub" / "latest", member("sub/latest", link="../out"), None)
    assert os.readlink(tmp_path / "sub" / "latest") == "../out"
    _place(tmp_path, tmp_path / "sub" / "latest", member("sub/latest"), b"now a file")
    assert not (tmp_path / "sub" / "latest").is_symlink()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "../.."])
def test_a_link_leading_out_of_the_repository_is_refused(tmp_path, target):
    root = tmp_path / "repo"
    root.mkdir()
    with pytest.raises(MlciConfigError, match="leads out of the repository"):
        _place(root, root / "sub" / "x", member("sub/x", link=target), None)
    assert not (root / "sub" / "x").is_symlink()


def test_anything_but_a_file_or_a_link_is_refused(tmp_path):
    device = member("dev")
    device.type = tarfile.CHRTYPE
    with pytest.raises(MlciConfigError, match="neither a file nor a link"):
        _place(tmp_path, tmp_path / "dev", device, None)
