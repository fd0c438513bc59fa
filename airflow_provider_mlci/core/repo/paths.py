"""Paths from a repository, resolved inside it: a link that leads out of the checkout is refused.

A revision is untrusted: it may hold ``data/x.csv -> /etc/passwd``, ``models -> ../../other``
or a requirements file that includes ``-r ../../secrets.txt``. Everything our code reads from a
checkout goes through :func:`inside`, which follows every link (as the operating system would
when opening the file) and refuses, with
:class:`~airflow_provider_mlci.exceptions.UnsafePathError`, a path whose real location is not
inside the checkout. Links that stay inside the repository keep working.

What DVC reads at a revision that is not checked out (plots, metrics) comes from git objects,
where a link is a blob holding its target; :func:`inside_commit` applies the same rule to such a
path by following the links the commit's tree holds.

Messages name the path as the repository writes it (and the link that leads out), never the
link's target or what lies there.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from collections.abc import Callable
from pathlib import Path

from airflow_provider_mlci.exceptions import UnsafePathError

__all__ = ["git_link_reader", "inside", "inside_commit"]

#: Links followed before a path counts as a loop (the Linux kernel's limit).
_MAX_LINKS = 40
_GIT_LINK_MODE = "120000"


def inside(
    root: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    what: str = "path",
    follow_last: bool = True,
) -> Path:
    """Return the real location of ``path`` in the checkout ``root``, if it is inside the checkout.

    Every link on the way is followed, as opening the file would follow it; the file itself need
    not exist (a DVC-tracked file may not be pulled yet).

    :param root: the checkout's root folder
    :param path: a path relative to ``root`` as the repository or the user writes it, or an
        absolute path meant to lie in ``root``
    :param what: what the path is, for the message (``"dataset"``, ``"model file"``)
    :param follow_last: ``False`` to resolve only the folders and keep the last part as it is
        (for a file about to be replaced, whose own link must not be written through)
    :raises UnsafePathError: naming ``path`` (and the link that leads out) when it is absolute
        outside ``root``, climbs out with ``..``, or passes through a link whose target is outside
    """
    base = Path(os.path.abspath(root))
    real_base = Path(os.path.realpath(base))
    text = os.fspath(path)
    shown = _shown(base, text)
    candidate = base / text
    if not text:
        raise UnsafePathError(f"The {what} {text!r} names no file inside the repository.")
    if not Path(os.path.normpath(candidate)).is_relative_to(base):
        raise UnsafePathError(f"The {what} {shown!r} is outside the repository: give a path inside it.")
    if follow_last:
        real = Path(os.path.realpath(candidate))
    else:
        if candidate.name in ("", ".", "..") or os.path.normpath(candidate) == str(base):
            raise UnsafePathError(f"The {what} {shown!r} names no file inside the repository.")
        real = Path(os.path.realpath(candidate.parent)) / candidate.name
    if not real.is_relative_to(real_base):
        raise UnsafePathError(_through_link(what, shown, _leading_link(base, real_base, shown)))
    return real


def inside_commit(path: str, read_link: Callable[[str], str | None], *, what: str = "path") -> str:
    """Return where ``path`` leads in a commit's tree, following the links the tree holds.

    :param path: a path relative to the repository's root, ``/``-separated
    :param read_link: gives the target of the link at a ``/``-separated path of the tree, or
        ``None`` where there is no link (see :func:`git_link_reader`)
    :param what: what the path is, for the message
    :raises UnsafePathError: naming ``path`` (and the link that leads out) when it is absolute,
        climbs out with ``..``, or passes through a link whose target is outside the tree
    """
    normal = posixpath.normpath(path) if path else ""
    if not path or posixpath.isabs(path) or normal == ".." or normal.startswith("../"):
        raise UnsafePathError(f"The {what} {path!r} is outside the repository: give a path inside it.")
    resolved = _walk(path, read_link, what)
    if resolved is None:
        parts = path.split("/")
        link = next(
            "/".join(parts[:count])
            for count in range(1, len(parts) + 1)
            if _walk("/".join(parts[:count]), read_link, what) is None
        )
        raise UnsafePathError(_through_link(what, path, link))
    return resolved


def _walk(path: str, read_link: Callable[[str], str | None], what: str) -> str | None:
    """Where ``path`` leads in the tree (``None``: out of it), following links as the kernel would."""
    pending = [part for part in path.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    followed = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        target = read_link("/".join([*resolved, part]))
        if target is None:
            resolved.append(part)
            continue
        followed += 1
        if followed > _MAX_LINKS:
            raise UnsafePathError(f"The {what} {path!r} goes through more than {_MAX_LINKS} links (a loop).")
        if posixpath.isabs(target):
            return None
        pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return "/".join(resolved)


def git_link_reader(root: str | os.PathLike[str], rev: str) -> Callable[[str], str | None]:
    """A ``read_link`` for :func:`inside_commit` over the tree of ``rev`` in the repository at ``root``.

    :param root: a git checkout (or bare repository) holding ``rev``
    :param rev: a commit id
    """

    def read_link(path: str) -> str | None:
        listed = _git(root, "ls-tree", "-z", rev, "--", path)
        mode, _, rest = listed.partition(" ")
        if mode != _GIT_LINK_MODE:
            return None
        oid = rest.split("\t", 1)[0].split(" ")[-1]
        return _git(root, "cat-file", "blob", oid)

    return read_link


def _git(root: str | os.PathLike[str], *args: str) -> str:
    """git's output, or nothing where git fails (a revision it does not have holds no link)."""
    done = subprocess.run(
        ["git", "--literal-pathspecs", *args], cwd=root, capture_output=True, text=True, errors="surrogateescape"
    )
    return done.stdout if done.returncode == 0 else ""


def _shown(base: Path, text: str) -> str:
    """``text`` as the repository writes it: relative to the root where it lies under it."""
    if os.path.isabs(text) and Path(text).is_relative_to(base):
        return Path(text).relative_to(base).as_posix()
    return text


def _leading_link(base: Path, real_base: Path, shown: str) -> str:
    """The first part of ``shown`` (relative to ``base``) whose real location is outside the
    checkout: the link that leads out."""
    parts = Path(shown).parts
    for count in range(1, len(parts) + 1):
        if not Path(os.path.realpath(base.joinpath(*parts[:count]))).is_relative_to(real_base):
            return Path(*parts[:count]).as_posix()
    return shown


def _through_link(what: str, shown: str, link: str) -> str:
    if link == shown:
        return (
            f"The {what} {shown!r} is a link that leads out of the repository: only links that stay "
            "inside the repository are followed."
        )
    return (
        f"The {what} {shown!r} leads out of the repository through the link {link!r}: only links "
        "that stay inside the repository are followed."
    )
