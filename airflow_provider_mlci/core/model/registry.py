"""Model versions and stages as git tags in GTO's format, written with compare-and-swap.

The registry is the repository's tags, so ``gto show`` and ``dvc.api.artifacts_show`` read
what is written here::

    fraud@v1.3.0       annotated tag on the commit that holds the model: version v1.3.0 of "fraud"
    fraud#prod#7       annotated tag on that commit: "fraud" goes to stage prod (7 = a counter
                       over all stage tags of "fraud", so every assignment is a new tag)
    fraud#prod!#8      stage prod of "fraud" emptied (written by GTO; read here)
    fraud@v1.3.0!      version deregistered (read here)

The model on a stage is the one its most recent stage tag (by tagger time, then counter)
assigns. Tag messages carry the evidence (metrics, data revision, the replaced model) as JSON
after a one-line summary.

A promotion re-reads the tags from the remote right before writing, refuses if the model on the
stage is not the one the gate compared against, and pushes its tags in one atomic push. Two
promotions racing compute the same next tag name, so the remote accepts exactly one of them;
the other re-reads, sees the stage changed, and fails with :class:`PromotionConflictError`. A push
the remote refuses by a rule of its own (a pre-receive hook, a protected tag) is no race: it fails
at once with :class:`~airflow_provider_mlci.exceptions.GitPushRefusedError`, quoting the remote.
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.core.runtime.process import private_tempdir
from airflow_provider_mlci.exceptions import GitError, MlciConfigError, PromotionConflictError, StageOrderError

if TYPE_CHECKING:
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "Bump",
    "Champion",
    "GitRegistry",
    "RegistryState",
    "RegistryTag",
    "ReleaseResult",
    "artifact_path",
    "check_model_name",
    "check_stage_name",
    "parse_tag",
    "parse_version",
    "read_evidence",
]

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_/-]*[A-Za-z0-9])?"
_PREFIXED = rf"(?:[A-Za-z0-9_./-]+=)?{_NAME}"
_SEMVER = (
    r"v(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_TAG = re.compile(
    rf"^(?P<name>{_PREFIXED})"
    rf"(?:@(?P<version>{_SEMVER})(?P<dereg>!?)|@(?P<deprecated>deprecated)|#(?P<stage>{_NAME})(?P<unassign>!?))"
    r"(?:#(?P<counter>\d+))?$"
)
_NAME_RE = re.compile(rf"^(?:[A-Za-z0-9_./-]+:)?{_NAME}$")
_STAGE_RE = re.compile(rf"^{_NAME}$")
_VERSION_RE = re.compile(rf"^{_SEMVER}$")
_EVIDENCE_MARK = "mlci-evidence:"


class Bump(enum.StrEnum):
    """Which part of the semantic version a new registration increments."""

    MAJOR = "major"
    MINOR = "minor"
    PATCH = "patch"

    @classmethod
    def of(cls, value: str | Bump) -> Bump:
        """Return the member ``value`` names.

        :param value: ``"major"``, ``"minor"`` or ``"patch"``
        :raises MlciConfigError: for anything else
        """
        try:
            return cls(value)
        except ValueError:
            raise MlciConfigError(f"bump={value!r} is not one of major, minor, patch.") from None


def check_model_name(name: str) -> str:
    """Return ``name`` if GTO accepts it as an artifact name (``dir:name`` allowed), else raise.

    :param name: the model's name in the registry
    :raises MlciConfigError: naming it
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) < 2:
        raise MlciConfigError(
            f"{name!r} is not a valid model name: letters, digits, '-', '_' and '/', starting and ending "
            "with a letter or digit, optionally prefixed by 'folder:'."
        )
    return name


def check_stage_name(stage: str) -> str:
    """Return ``stage`` if GTO accepts it as a stage name, else raise.

    :param stage: a stage such as ``prod``
    :raises MlciConfigError: naming it
    """
    if not isinstance(stage, str) or not _STAGE_RE.match(stage) or len(stage) < 2:
        raise MlciConfigError(f"{stage!r} is not a valid stage name (letters, digits, '-', '_', '/').")
    return stage


def parse_version(version: str) -> tuple[int, int, int]:
    """Return ``(major, minor, patch)`` of a semantic version such as ``v1.2.3`` (``1.2.3`` accepted).

    :param version: the version as written
    :raises MlciConfigError: it is not a semantic version
    """
    text = version if isinstance(version, str) and version.startswith("v") else f"v{version}"
    match = _VERSION_RE.match(text) if isinstance(version, str) else None
    if not match:
        raise MlciConfigError(f"{version!r} is not a semantic version (vMAJOR.MINOR.PATCH, for example v1.4.0).")
    return int(match["major"]), int(match["minor"]), int(match["patch"])


def _normalised(version: str) -> str:
    """``1.2.3`` or ``v1.2.3`` as the tag writes it: ``v1.2.3``."""
    return "v{}.{}.{}".format(*parse_version(version))


def _tag_name(name: str) -> str:
    return name.replace(":", "=")


@dataclass(frozen=True, kw_only=True)
class RegistryTag:
    """One registry tag, parsed.

    :param tag: the tag's name
    :param name: the model (``:`` restored)
    :param action: ``register``, ``deregister``, ``deprecate``, ``assign`` or ``unassign``
    :param version: the version of a (de)registration
    :param stage: the stage of an (un)assignment
    :param counter: the counter of a stage tag
    :param sha: the commit it points at
    :param time: the tagger time (Unix seconds)
    """

    tag: str
    name: str
    action: str
    version: str | None = None
    stage: str | None = None
    counter: int = 0
    sha: str = ""
    time: int = 0


def parse_tag(tag: str, *, sha: str = "", time: int = 0) -> RegistryTag | None:
    """Parse a tag name in GTO's grammar; ``None`` for any other tag.

    :param tag: the tag's name
    :param sha: the commit it points at
    :param time: its tagger time
    """
    match = _TAG.match(tag)
    if not match:
        return None
    if match["version"]:
        action = "deregister" if match["dereg"] else "register"
    elif match["deprecated"]:
        action = "deprecate"
    else:
        action = "unassign" if match["unassign"] else "assign"
    return RegistryTag(
        tag=tag,
        name=match["name"].replace("=", ":"),
        action=action,
        version=match["version"],
        stage=match["stage"],
        counter=int(match["counter"] or 0),
        sha=sha,
        time=time,
    )


@dataclass(frozen=True, kw_only=True)
class Champion:
    """The model on a stage.

    :param name: the model
    :param stage: the stage
    :param version: its registered version at that commit (``None``: an unregistered commit)
    :param sha: the commit
    :param tag: the stage tag that put it there
    """

    name: str
    stage: str
    version: str | None
    sha: str
    tag: str

    def to_json(self) -> dict[str, Any]:
        """The champion as small JSON."""
        return {"name": self.name, "stage": self.stage, "version": self.version, "sha": self.sha, "tag": self.tag}


@dataclass(frozen=True)
class RegistryState:
    """Every registry tag of a repository at one moment.

    :param tags: the annotated registry tags (lightweight tags are not registry entries)
    """

    tags: tuple[RegistryTag, ...] = ()

    def _of(self, name: str) -> list[RegistryTag]:
        return [t for t in self.tags if t.name == name]

    def versions(self, name: str) -> dict[str, str]:
        """``{version: commit}`` of the registered, not deregistered, versions of ``name``.

        :param name: the model
        """
        tags = self._of(name)
        gone = {t.version for t in tags if t.action == "deregister"}
        return {t.version: t.sha for t in tags if t.action == "register" and t.version not in gone and t.version}

    def version_at(self, name: str, sha: str) -> str | None:
        """The version of ``name`` registered at commit ``sha``, if any.

        :param name: the model
        :param sha: a commit
        """
        found = [v for v, at in self.versions(name).items() if at == sha]
        return max(found, key=parse_version) if found else None

    def latest_version(self, name: str) -> str | None:
        """The greatest registered version of ``name``.

        :param name: the model
        """
        versions = self.versions(name)
        return max(versions, key=parse_version) if versions else None

    def next_counter(self, name: str) -> int:
        """The counter the next stage tag of ``name`` takes.

        :param name: the model
        """
        return max((t.counter for t in self._of(name)), default=0) + 1

    def last_time(self, name: str) -> int:
        """The latest tagger time among the tags of ``name``.

        :param name: the model
        """
        return max((t.time for t in self._of(name)), default=0)

    def stage_events(self, name: str, stage: str) -> list[RegistryTag]:
        """The (un)assignments of ``name`` on ``stage``, oldest first.

        :param name: the model
        :param stage: the stage
        """
        events = [t for t in self._of(name) if t.stage == stage and t.action in ("assign", "unassign")]
        return sorted(events, key=lambda t: (t.time, t.counter))

    def stages(self, name: str) -> list[str]:
        """Every stage ``name`` has ever been assigned to.

        :param name: the model
        """
        return sorted({t.stage for t in self._of(name) if t.stage})

    def champion(self, name: str, stage: str) -> Champion | None:
        """The model on ``stage`` now, or ``None`` when the stage is empty.

        :param name: the model
        :param stage: the stage
        """
        events = self.stage_events(name, stage)
        if not events or events[-1].action == "unassign":
            return None
        last = events[-1]
        return Champion(name=name, stage=stage, version=self.version_at(name, last.sha), sha=last.sha, tag=last.tag)

    def previous(self, name: str, stage: str) -> Champion | None:
        """The model that was on ``stage`` before the current one (the newest other commit).

        :param name: the model
        :param stage: the stage
        """
        current = self.champion(name, stage)
        for event in reversed(self.stage_events(name, stage)):
            if event.action == "assign" and (current is None or event.sha != current.sha):
                version = self.version_at(name, event.sha)
                return Champion(name=name, stage=stage, version=version, sha=event.sha, tag=event.tag)
        return None


@dataclass(frozen=True, kw_only=True)
class ReleaseResult:
    """What a promotion or rollback wrote.

    :param name: the model
    :param stage: the stage
    :param version: the version now on the stage
    :param sha: its commit
    :param tags: the tags pushed (empty when the stage already held it)
    :param replaced: the model that was on the stage before, if any
    :param attempts: how many tries it took
    """

    name: str
    stage: str
    version: str | None
    sha: str
    tags: tuple[str, ...]
    replaced: Champion | None
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        """The result as small JSON."""
        return {
            "name": self.name,
            "stage": self.stage,
            "version": self.version,
            "sha": self.sha,
            "tags": list(self.tags),
            "changed": bool(self.tags),
            "replaced": self.replaced.to_json() if self.replaced else None,
            "attempts": self.attempts,
        }


#: Passed as ``expected`` to skip the compare-and-swap check.
UNCHECKED: Any = object()


@dataclass(kw_only=True)
class GitRegistry:
    """The registry of one repository, read and written through a task's checkout.

    :param workspace: a checkout of the repository (its ``origin`` is the remote written to)
    :param tagger: ``"Name <email>"`` recorded as the tags' author
    :param max_attempts: how often to redo a write whose tag names another writer took first
        (only while the stage still holds the expected model)
    """

    workspace: Workspace
    tagger: str = "Airflow MLCI <mlci@airflow.invalid>"
    max_attempts: int = 3
    _allowed_stages: list[str] | None = field(default=None, init=False)

    def refresh(self) -> RegistryState:
        """Fetch every tag from the remote and return the registry as it is now.

        :raises GitRemoteError: the remote cannot be reached
        """
        git, root = self.workspace.git, self.workspace.path
        git.check(
            ["fetch", "--quiet", "--force", "--prune", "origin", "+refs/tags/*:refs/tags/*"], cwd=root, remote=True
        )
        return self.read()

    def read(self) -> RegistryState:
        """The registry as the checkout's tags have it (no fetch)."""
        fmt = "%(refname:lstrip=2)%09%(objecttype)%09%(*objectname)%09%(taggerdate:unix)"
        out = self.workspace.git.check(
            ["for-each-ref", f"--format={fmt}", "refs/tags"], cwd=self.workspace.path, capture=True
        )
        tags = []
        for line in out.splitlines():
            name, kind, target, when = [*line.split("\t"), "", "", ""][:4]
            if kind != "tag":  # lightweight tags are no registry entries (GTO ignores them too)
                continue
            parsed = parse_tag(name, sha=target, time=int(when or 0))
            if parsed is not None:
                tags.append(parsed)
        return RegistryState(tuple(tags))

    def allowed_stages(self) -> list[str] | None:
        """The stages the repository's ``.gto`` file allows (``None``: any stage).

        :raises UnsafePathError: ``.gto`` is a link that leads out of the repository
        """
        if self._allowed_stages is None:
            path = inside(self.workspace.path, ".gto", what="GTO config")
            stages: list[str] = []
            if path.is_file():
                try:
                    config = yaml.safe_load(path.read_text()) or {}
                except yaml.YAMLError as exc:
                    raise MlciConfigError(f"Cannot parse .gto at {self.workspace.sha[:12]}: {exc}") from exc
                stages = [str(s) for s in (config.get("stages") or [])] if isinstance(config, dict) else []
            self._allowed_stages = stages
        return self._allowed_stages or None

    def check_stage(self, stage: str) -> str:
        """Return ``stage`` if valid and allowed by ``.gto``; else raise naming it.

        :param stage: the stage
        :raises MlciConfigError: an invalid or unknown stage
        """
        check_stage_name(stage)
        allowed = self.allowed_stages()
        if allowed is not None and stage not in allowed:
            raise MlciConfigError(f"Unknown stage {stage!r}: the repository's .gto allows {', '.join(allowed)}.")
        return stage

    def promote(
        self,
        *,
        name: str,
        sha: str,
        stage: str,
        bump: Bump | str = Bump.MINOR,
        version: str | None = None,
        expected: Champion | Any | None = UNCHECKED,
        evidence: Mapping[str, Any] | None = None,
        stage_order: Sequence[str] = (),
    ) -> ReleaseResult:
        """Register ``sha`` as a new version of ``name`` (unless it has one) and put it on ``stage``.

        :param name: the model
        :param sha: the commit holding the candidate model
        :param stage: the stage, e.g. ``prod``
        :param bump: which part of the latest version to increment for a new version
        :param version: an explicit new version instead of a bump
        :param expected: the model the gate compared against (``None``: the stage was empty);
            the promotion aborts if the stage holds another one now
        :param evidence: JSON recorded in the tags' messages (metrics, data revision, …)
        :param stage_order: stages in the order a version must pass them (``("staging", "prod")``):
            ``sha`` may enter ``stage`` only after it was on every stage listed before it
        :raises StageOrderError: ``sha`` was never on a stage the order requires first; nothing written
        :raises PromotionConflictError: the stage changed since the gate, or kept changing
        :raises GitPushRefusedError: the remote refused the tags by a rule of its own (a hook, a
            protected tag); raised at once, nothing written
        :raises MlciConfigError: an invalid name, stage or version, or a version already taken
        """
        check_model_name(name)
        self.check_stage(stage)
        bump = Bump.of(bump)
        wanted = _normalised(version) if version else None
        for attempt in range(1, self.max_attempts + 1):
            state = self.refresh()
            current = state.champion(name, stage)
            if current is not None and current.sha == sha:
                return ReleaseResult(
                    name=name, stage=stage, version=current.version, sha=sha, tags=(), replaced=None, attempts=attempt
                )
            self._compare(name, stage, expected, current)
            check_stage_order(state, name, sha, stage, stage_order)
            new_version = state.version_at(name, sha)
            writes: list[tuple[str, str]] = []
            record = {
                **dict(evidence or {}),
                "model": name,
                "stage": stage,
                "sha": sha,
                "replaced": current.to_json() if current else None,
            }
            if new_version is None:
                new_version = wanted or _bump(state.latest_version(name), bump)
                taken = state.versions(name).get(new_version)
                if taken:
                    raise MlciConfigError(f"Version {new_version} of {name!r} is already registered at {taken[:12]}.")
                writes.append((f"{_tag_name(name)}@{new_version}", f"Register {name} {new_version}"))
            record["version"] = new_version
            counter = state.next_counter(name)
            writes.append((f"{_tag_name(name)}#{stage}#{counter}", f"Promote {name} {new_version} to {stage}"))
            if self._write(state, name, sha, writes, record, what=f"Promotion of {name} {new_version} to {stage}"):
                return ReleaseResult(
                    name=name,
                    stage=stage,
                    version=new_version,
                    sha=sha,
                    tags=tuple(tag for tag, _ in writes),
                    replaced=current,
                    attempts=attempt,
                )
            self.workspace.git.runner.log.info(
                "Another writer took %s first; reading the registry again", writes[-1][0]
            )
        raise PromotionConflictError(
            f"Could not promote {name} to {stage}: the registry kept changing for {self.max_attempts} attempts."
        )

    def rollback(
        self,
        *,
        name: str,
        stage: str,
        to_version: str | None = None,
        expected: Champion | Any | None = UNCHECKED,
        evidence: Mapping[str, Any] | None = None,
    ) -> ReleaseResult:
        """Put the model that was on ``stage`` before (or ``to_version``) back on it, in one tag.

        :param name: the model
        :param stage: the stage
        :param to_version: a registered version to put back (default: the previous model)
        :param expected: the model that must be on the stage now (default: not checked)
        :param evidence: JSON recorded in the tag's message
        :raises MlciConfigError: the stage never held ``name``, or no earlier model, or an unknown version
        :raises PromotionConflictError: the stage changed under us
        :raises GitPushRefusedError: the remote refused the tag by a rule of its own; at once
        """
        check_model_name(name)
        self.check_stage(stage)
        for attempt in range(1, self.max_attempts + 1):
            state = self.refresh()
            if stage not in state.stages(name):
                known = ", ".join(state.stages(name)) or "none"
                raise MlciConfigError(f"Model {name!r} has never been on stage {stage!r} (its stages: {known}).")
            current = state.champion(name, stage)
            self._compare(name, stage, expected, current)
            if to_version:
                wanted = _normalised(to_version)
                at = state.versions(name).get(wanted)
                if at is None:
                    known = ", ".join(sorted(state.versions(name), key=parse_version)) or "none"
                    raise MlciConfigError(f"Version {wanted} of {name!r} is not registered (versions: {known}).")
                target = Champion(name=name, stage=stage, version=wanted, sha=at, tag="")
            else:
                target = state.previous(name, stage)
                if target is None:
                    raise MlciConfigError(f"Stage {stage!r} of {name!r} has no earlier model to roll back to.")
            if current is not None and current.sha == target.sha:
                return ReleaseResult(
                    name=name, stage=stage, version=target.version, sha=target.sha, tags=(), replaced=None
                )
            record = {
                **dict(evidence or {}),
                "model": name,
                "stage": stage,
                "sha": target.sha,
                "version": target.version,
                "rollback": True,
                "replaced": current.to_json() if current else None,
            }
            tag = f"{_tag_name(name)}#{stage}#{state.next_counter(name)}"
            label = target.version or target.sha[:12]
            summary = f"Roll back {name} on {stage} to {label}"
            if self._write(state, name, target.sha, [(tag, summary)], record, what=f"Rollback of {name} on {stage}"):
                return ReleaseResult(
                    name=name,
                    stage=stage,
                    version=target.version,
                    sha=target.sha,
                    tags=(tag,),
                    replaced=current,
                    attempts=attempt,
                )
        raise PromotionConflictError(
            f"Could not roll back {name} on {stage}: the registry kept changing for {self.max_attempts} attempts."
        )

    @staticmethod
    def _compare(name: str, stage: str, expected: Any, current: Champion | None) -> None:
        if expected is UNCHECKED:
            return
        expected_sha = expected.sha if isinstance(expected, Champion) else None
        current_sha = current.sha if current else None
        if expected_sha != current_sha:
            before = f"{expected.version or expected.sha[:12]}" if isinstance(expected, Champion) else "no model"
            now = f"{current.version or current.sha[:12]} ({current.tag})" if current else "no model"
            raise PromotionConflictError(
                f"Stage {stage!r} of {name!r} changed since the gate compared against it: it held {before}, "
                f"it holds {now} now. Nothing was written; run the gate again."
            )

    def _write(
        self,
        state: RegistryState,
        name: str,
        sha: str,
        writes: Sequence[tuple[str, str]],
        record: Mapping[str, Any],
        *,
        what: str,
    ) -> bool:
        """Create the tags locally and push them in one atomic push; ``False`` if another writer
        took a tag name first (a race: the caller re-reads and decides again).

        :raises GitPushRefusedError: the remote refused the tags by a rule of its own (a hook, a
            protected tag): at once, since the same push would be refused again
        :raises GitRemoteError: the push failed otherwise (network, credentials)
        """
        git, root = self.workspace.git, self.workspace.path
        tagger_name, _, email = self.tagger.partition("<")
        when = max(int(time.time()), state.last_time(name) + 1)
        env = {
            **git.env,
            "GIT_COMMITTER_NAME": tagger_name.strip() or "Airflow MLCI",
            "GIT_COMMITTER_EMAIL": email.rstrip(">").strip() or "mlci@airflow.invalid",
            "GIT_COMMITTER_DATE": f"{when} +0000",
        }
        evidence = json.dumps(record, indent=2, sort_keys=True, default=str)
        created: list[str] = []
        try:
            with private_tempdir("tag") as tmp:
                for tag, summary in writes:
                    message = Path(tmp) / "message"
                    message.write_text(f"{summary}\n\n{_EVIDENCE_MARK}\n{evidence}\n")
                    made = git.runner.run(
                        ["git", "tag", "--annotate", "--cleanup=verbatim", "--file", str(message), tag, sha],
                        cwd=root,
                        env=env,
                        capture=True,
                        quiet=True,
                    )
                    if made.returncode != 0:
                        raise GitError(f"git tag {tag} failed: {made.tail_text.strip()}")
                    created.append(tag)
            refs = [f"refs/tags/{tag}" for tag in created]
            pushed = git.runner.run(
                ["git", "push", "--atomic", "--porcelain", "origin", *refs], cwd=root, env=env, capture=True, quiet=True
            )
            if pushed.returncode == 0:
                return True
            error = git.push_failure(pushed, what=what)
            if error is not None:
                raise error
            return False
        finally:
            for tag in created:
                git.run(["tag", "--delete", tag], cwd=root)


def check_stage_order(state: RegistryState, name: str, sha: str, stage: str, order: Sequence[str]) -> None:
    """Refuse to put ``sha`` on ``stage`` unless it was on every stage ``order`` lists before it.

    :param state: the registry now
    :param name: the model
    :param sha: the candidate's commit
    :param stage: the stage it is promoted to
    :param order: the stages in the order a version passes them (a stage not in it has no condition)
    :raises StageOrderError: naming the first stage it skipped
    """
    order = list(order)
    if stage not in order:
        return
    for before in order[: order.index(stage)]:
        if not any(e.action == "assign" and e.sha == sha for e in state.stage_events(name, before)):
            raise StageOrderError(
                f"{name} at {sha[:12]} cannot go to {stage}: it was never on {before} "
                f"(stage order {' -> '.join(order)}). Nothing was written; promote it to {before} first."
            )


def read_evidence(message: str) -> dict[str, Any]:
    """The JSON evidence a tag message written here carries (``{}`` for other messages).

    :param message: the tag's message
    """
    _, mark, rest = message.partition(_EVIDENCE_MARK)
    if not mark:
        return {}
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _bump(latest: str | None, bump: Bump) -> str:
    major, minor, patch = parse_version(latest) if latest else (0, 0, 0)
    if bump is Bump.MAJOR:
        return f"v{major + 1}.0.0"
    if bump is Bump.MINOR:
        return f"v{major}.{minor + 1}.0"
    return f"v{major}.{minor}.{patch + 1}"


def artifact_path(root: Path, name: str) -> str | None:
    """The path ``dvc.yaml`` at ``root`` gives the artifact ``name`` (``None`` if it declares none).

    :param root: the checkout
    :param name: the artifact, as in ``artifacts:`` of ``dvc.yaml``
    :raises MlciConfigError: ``dvc.yaml`` does not parse
    :raises UnsafePathError: ``dvc.yaml`` is a link that leads out of the repository
    """
    path = inside(root, "dvc.yaml", what="pipeline file")
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MlciConfigError(f"Cannot parse dvc.yaml: {exc}") from exc
    entry = (data.get("artifacts") or {}).get(name) if isinstance(data, dict) else None
    found = entry.get("path") if isinstance(entry, dict) else None
    return str(found) if found else None
