"""``dvc.yaml`` -> stage graph, cheaply enough to run at every DAG parse.

A plain ``dvc.yaml`` is read as YAML (PyYAML, which Airflow has already loaded) and the stage
graph comes from the paths stages declare: a stage depends on another when one of its
dependencies is, or lies inside (or contains), one of the other's outputs, as DVC decides.

A templated ``dvc.yaml`` (``vars``, ``foreach``, ``matrix``, ``${...}``) is expanded by DVC's own
parser, in a subprocess (DVC never enters the parsing process), and the result is cached in a
file keyed by the hashes of ``dvc.yaml``, the params files it can read and DVC's version, so only
the first parse after a change pays for it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_mlci.exceptions import DvcFileError, DvcPipelineMismatchError, MlciConfigError

__all__ = ["OutSpec", "PipelineSpec", "StageSpec", "check_stages_match", "load_pipeline"]

_TEMPLATE_KEYS = ("foreach", "matrix")


@dataclass(frozen=True, kw_only=True)
class OutSpec:
    """An output a stage declares.

    :param path: its path, relative to the repository root
    :param cache: whether DVC caches it (and so pushes it to the remote)
    :param kind: ``out``, ``metric`` or ``plot``
    """

    path: str
    cache: bool = True
    kind: str = "out"


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """A pipeline stage as ``dvc.yaml`` declares it.

    :param name: its DVC address (``train``, ``build@us``, ``sub/dvc.yaml:train``)
    :param deps: dependency paths, relative to the repository root
    :param outs: outputs (outs, metrics, plots)
    :param upstream: the stages it depends on, by name
    :param desc: its description
    """

    name: str
    deps: tuple[str, ...] = ()
    outs: tuple[OutSpec, ...] = ()
    upstream: tuple[str, ...] = ()
    desc: str | None = None


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    """The stages of one ``dvc.yaml``, upstream first.

    :param dvc_file: the ``dvc.yaml`` path, relative to the repository root
    :param stages: ``{name: stage}``, upstream first
    """

    dvc_file: str
    stages: dict[str, StageSpec] = field(default_factory=dict)

    def graph(self) -> dict[str, list[str]]:
        """``{stage: [upstream stages]}``."""
        return {name: sorted(stage.upstream) for name, stage in self.stages.items()}

    def select(self, select: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> PipelineSpec:
        """The stages matching any ``select`` pattern (default: all) and no ``exclude`` pattern.

        Patterns are globs on stage names (``train*``, ``build@*``). Upstream links to stages
        left out are dropped: those stages' outputs come from the remote as the lock names them.

        :param select: patterns of stages to keep
        :param exclude: patterns of stages to leave out
        :raises MlciConfigError: a pattern matches no stage
        """
        names = list(self.stages)
        for pattern in [*(select or ()), *(exclude or ())]:
            if not fnmatch.filter(names, pattern):
                raise MlciConfigError(f"No stage of {self.dvc_file} matches {pattern!r}; stages: {', '.join(names)}")
        kept = [n for n in names if not select or any(fnmatch.fnmatchcase(n, p) for p in select)]
        kept = [n for n in kept if not any(fnmatch.fnmatchcase(n, p) for p in exclude or ())]
        keep = set(kept)
        stages = {
            n: replace(self.stages[n], upstream=tuple(u for u in self.stages[n].upstream if u in keep)) for n in kept
        }
        return replace(self, stages=stages)

    def ancestors(self, name: str) -> list[str]:
        """Every stage ``name`` depends on, directly or not, upstream first."""
        seen: set[str] = set()
        stack = list(self.stages[name].upstream)
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.stages[current].upstream)
        return [n for n in self.stages if n in seen]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (for the render cache)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineSpec:
        """Read :meth:`to_json`'s form back.

        :param data: the JSON form
        """
        stages = {}
        for name, stage in data["stages"].items():
            stages[name] = StageSpec(
                name=stage["name"],
                deps=tuple(stage["deps"]),
                outs=tuple(OutSpec(**out) for out in stage["outs"]),
                upstream=tuple(stage["upstream"]),
                desc=stage.get("desc"),
            )
        return cls(dvc_file=data["dvc_file"], stages=stages)


def load_pipeline(
    project_dir: str | os.PathLike[str],
    dvc_file: str = "dvc.yaml",
    *,
    render_cache: str | os.PathLike[str] | None = None,
) -> PipelineSpec:
    """Read the stages of ``project_dir/dvc_file``.

    :param project_dir: a local copy of the repository (its root)
    :param dvc_file: the ``dvc.yaml`` to read, relative to ``project_dir``
    :param render_cache: where to keep DVC's expansion of a templated file (default: a folder
        in the system's temporary directory)
    :raises DvcFileError: naming the file, when it is missing, malformed or has a cycle
    """
    root = Path(project_dir)
    path = root / dvc_file
    try:
        text = path.read_text()
    except OSError as exc:
        raise DvcFileError(f"Cannot read {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DvcFileError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        raise DvcFileError(f"{path}: 'stages' must be a mapping of stage names to stages")
    if _templated(data):
        spec = _render_with_dvc(root, dvc_file, text, data, render_cache)
    else:
        spec = _from_yaml(dvc_file, data)
    _check_acyclic(spec, path)
    _check_no_subrepos(root, spec)
    return spec


def check_stages_match(
    graph: dict[str, list[str]], expected: dict[str, list[str]], *, dvc_file: str = "dvc.yaml", where: str = ""
) -> dict[str, list[str]]:
    """The stages of ``dvc_file`` in ``graph``, checked against the stages a DAG was rendered from.

    :param graph: ``{stage: [upstream stages]}`` of the whole project (stages of another
        ``dvc.yaml`` are named ``<file>:<stage>``)
    :param expected: ``{stage: [upstream stages]}`` as rendered
    :param dvc_file: the ``dvc.yaml`` the stages come from
    :param where: the revision and commit, for the message
    :raises DvcPipelineMismatchError: naming the stages added or removed and the dependencies changed
    """
    prefix = "" if dvc_file == "dvc.yaml" else f"{dvc_file}:"
    actual = {
        name: sorted(upstream)
        for name, upstream in graph.items()
        if (name.startswith(prefix) if prefix else ":" not in name)
    }
    rendered = {name: sorted(upstream) for name, upstream in expected.items()}
    problems = []
    if added := sorted(set(actual) - set(rendered)):
        problems.append(f"stages added: {', '.join(added)}")
    if removed := sorted(set(rendered) - set(actual)):
        problems.append(f"stages removed: {', '.join(removed)}")
    for name in sorted(set(actual) & set(rendered)):
        if actual[name] != rendered[name]:
            problems.append(
                f"stage {name} now depends on [{', '.join(actual[name])}], not [{', '.join(rendered[name])}]"
            )
    if problems:
        raise DvcPipelineMismatchError(
            f"The pipeline in {dvc_file}{f' at {where}' if where else ''} is not the one this DAG was "
            f"rendered from ({'; '.join(problems)}). Update the DAG's copy of the project."
        )
    return actual


def _templated(data: dict[str, Any]) -> bool:
    if "vars" in data:
        return True
    for stage in data.get("stages", {}).values():
        if isinstance(stage, dict) and any(key in stage for key in _TEMPLATE_KEYS):
            return True
    return "${" in json.dumps(data.get("stages", {}), default=str)


def _from_yaml(dvc_file: str, data: dict[str, Any]) -> PipelineSpec:
    base = posixpath.dirname(dvc_file)
    prefix = "" if dvc_file == "dvc.yaml" else f"{dvc_file}:"
    stages: dict[str, StageSpec] = {}
    for name, body in data.get("stages", {}).items():
        if not isinstance(body, dict) or "cmd" not in body:
            raise DvcFileError(f"{dvc_file}: stage {name!r} has no 'cmd'")
        wdir = posixpath.normpath(posixpath.join(base, str(body.get("wdir", "."))))
        deps = tuple(_join(wdir, dep) for dep in _paths(body.get("deps"), dvc_file, name, "deps"))
        outs = []
        for kind, key in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
            for entry in body.get(key) or ():
                out_path, options = _entry(entry, dvc_file, name, key)
                _check_supported(
                    dvc_file, str(name), out_path, push=options.get("push", True), remote=options.get("remote")
                )
                outs.append(OutSpec(path=_join(wdir, out_path), cache=bool(options.get("cache", True)), kind=kind))
        stages[prefix + str(name)] = StageSpec(
            name=prefix + str(name), deps=deps, outs=tuple(outs), desc=body.get("desc")
        )
    return PipelineSpec(dvc_file=dvc_file, stages=_link(stages))


def _check_supported(dvc_file: str, stage: str, path: str, *, push: Any, remote: Any) -> None:
    """Refuse, naming the feature, what a stage task on another worker could not see."""
    where = f"{dvc_file}: stage {stage!r}, output {path!r}"
    if push is False:
        raise DvcFileError(
            f"{where} has 'push: false': its data would stay on the worker that made it, where the next stage's "
            "task (on another worker) cannot get it. Remove 'push: false', or run the pipeline as one task "
            "(mode='single')."
        )
    if remote:
        raise DvcFileError(
            f"{where} names its own remote ({remote!r}): per-output remotes are not supported; the stage tasks "
            "push to and pull from the repository's default remote (or the connection's)."
        )


def _check_no_subrepos(root: Path, spec: PipelineSpec) -> None:
    """Refuse stages reading from or writing into a DVC subrepo (a folder with its own ``.dvc``)."""
    for name, stage in spec.stages.items():
        for path in [*stage.deps, *(out.path for out in stage.outs)]:
            parts = Path(path).parts
            for depth in range(1, len(parts)):
                folder = root.joinpath(*parts[:depth])
                if (folder / ".dvc").is_dir():
                    subrepo = folder.relative_to(root)
                    raise DvcFileError(
                        f"{spec.dvc_file}: stage {name!r} uses {path!r}, inside the DVC subrepo {subrepo}/"
                        " (it has a .dvc folder of its own): subrepos are not supported; render the subrepo's own "
                        "dvc.yaml from its own repository."
                    )


def _paths(value: Any, dvc_file: str, stage: str, key: str) -> list[str]:
    return [_entry(entry, dvc_file, stage, key)[0] for entry in value or ()]


def _entry(entry: Any, dvc_file: str, stage: str, key: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        ((path, options),) = entry.items()
        return str(path), options if isinstance(options, dict) else {}
    raise DvcFileError(f"{dvc_file}: stage {stage!r} has an entry under '{key}' that is not a path: {entry!r}")


def _join(wdir: str, path: str) -> str:
    joined = posixpath.normpath(posixpath.join(wdir, path))
    return joined.removeprefix("./")


def _overlaps(dep: str, out: str) -> bool:
    return dep == out or dep.startswith(out.rstrip("/") + "/") or out.startswith(dep.rstrip("/") + "/")


def _link(stages: dict[str, StageSpec]) -> dict[str, StageSpec]:
    """Fill in ``upstream`` from the paths, and order the stages upstream first."""
    producers = [(out.path, name) for name, stage in stages.items() for out in stage.outs]
    linked = {}
    for name, stage in stages.items():
        upstream = sorted(
            {producer for dep in stage.deps for path, producer in producers if _overlaps(dep, path)} - {name}
        )
        linked[name] = replace(stage, upstream=tuple(upstream))
    return _upstream_first(linked)


def _upstream_first(stages: dict[str, StageSpec]) -> dict[str, StageSpec]:
    ordered: dict[str, StageSpec] = {}
    pending = dict(stages)
    while pending:
        ready = [name for name, stage in pending.items() if all(u in ordered for u in stage.upstream)]
        if not ready:
            return {**ordered, **pending}  # a cycle; _check_acyclic names it
        for name in ready:
            ordered[name] = pending.pop(name)
    return ordered


def _check_acyclic(spec: PipelineSpec, path: Path) -> None:
    done: set[str] = set()
    for name in spec.stages:
        if not all(u in done for u in spec.stages[name].upstream):
            cycle = [n for n in spec.stages if n not in done]
            raise DvcFileError(f"{path}: the stages {', '.join(cycle)} depend on each other in a cycle")
        done.add(name)


# ------------------------------------------------------------------------ DVC's own parser


def _render_with_dvc(
    root: Path, dvc_file: str, text: str, data: dict[str, Any], render_cache: str | os.PathLike[str] | None
) -> PipelineSpec:
    cache_dir = Path(render_cache) if render_cache else Path(tempfile.gettempdir()) / "mlci-render"
    key = _render_key(root, dvc_file, text, data)
    cached = cache_dir / f"{key}.json"
    if cached.exists():
        try:
            return PipelineSpec.from_json(json.loads(cached.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry: render again
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_mlci.core.dvc.pipeline", str(root), dvc_file],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,  # DVC names stages relative to the working directory
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise DvcFileError(f"{root / dvc_file}: DVC could not expand it: {detail}")
    spec = PipelineSpec.from_json(json.loads(proc.stdout))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(spec.to_json()))
    os.replace(tmp, cached)
    return spec


def _render_key(root: Path, dvc_file: str, text: str, data: dict[str, Any]) -> str:
    from importlib.metadata import version

    digest = hashlib.sha256()
    digest.update(version("dvc").encode())
    digest.update(dvc_file.encode())
    digest.update(text.encode())
    base = root / posixpath.dirname(dvc_file)
    names = {"params.yaml"} | {v for v in _vars_files(data)}
    for name in sorted(names):
        candidate = base / name
        if candidate.is_file():
            digest.update(name.encode())
            digest.update(candidate.read_bytes())
    return digest.hexdigest()[:32]


def _vars_files(data: dict[str, Any]) -> Iterable[str]:
    entries = list(data.get("vars") or [])
    for stage in data.get("stages", {}).values():
        if isinstance(stage, dict):
            entries += list(stage.get("vars") or [])
            if isinstance(stage.get("do"), dict):
                entries += list(stage["do"].get("vars") or [])
    for entry in entries:
        if isinstance(entry, str):
            yield entry.split(":", 1)[0]


def _render(root: str, dvc_file: str) -> dict[str, Any]:
    """Expand ``dvc_file`` with DVC (subprocess side)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    wanted = os.path.abspath(os.path.join(root, dvc_file))
    with Repo(root, uninitialized=True) as repo:
        graph = repo.index.graph
        stages = {}
        for stage in repo.index.stages:
            if not stage.cmd or os.path.abspath(stage.dvcfile.path) != wanted:
                continue
            for out in stage.outs:
                relpath = os.path.relpath(out.fs_path, repo.root_dir)
                _check_supported(dvc_file, stage.addressing, relpath, push=out.can_push, remote=out.remote)
            outs = tuple(
                OutSpec(
                    path=os.path.relpath(out.fs_path, repo.root_dir),
                    cache=bool(out.use_cache),
                    kind="metric" if out.metric else "plot" if out.plot else "out",
                )
                for out in stage.outs
            )
            stages[stage.addressing] = StageSpec(
                name=stage.addressing,
                deps=tuple(
                    os.path.relpath(dep.fs_path, repo.root_dir)
                    for dep in stage.deps
                    if not isinstance(dep, ParamsDependency)
                ),
                outs=outs,
                upstream=tuple(sorted(up.addressing for up in graph.successors(stage) if up.cmd)),
                desc=stage.desc,
            )
    return PipelineSpec(dvc_file=dvc_file, stages=_upstream_first(stages)).to_json()


if __name__ == "__main__":
    print(json.dumps(_render(sys.argv[1], sys.argv[2])))
