"""A corpus of DVC projects written the way DVC's docs and templates teach, and the by-hand run.

Each project is a small but real DVC project with its own stage scripts (standard library
only, plus DVCLive where the project uses it), built in a folder with a bare git remote and a
local DVC remote. :func:`by_hand` runs what a person would on the same commit (``git clone``,
``dvc pull``, ``dvc repro``, ``git add -A``) and records what it left, so a test can compare
the per-stage tasks' result with it: the stages that ran, ``dvc.lock`` (parsed, in DVC's
order), every file ``git add -A`` would commit, the metrics and the outputs in the remote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_mlci.testing import LocalDvcProject, create_dvc_project

_RAN = re.compile(r"Running stage '([^']+)'")


def write(root: Path, files: dict[str, str]) -> None:
    """Write ``{relative path: text}`` under ``root`` (text is dedented)."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


@dataclass(kw_only=True)
class ByHand:
    """What ``git clone`` + ``dvc pull`` + ``dvc repro`` + ``git add -A`` left, on one commit.

    :param work: the by-hand working copy
    :param ran: the stages DVC said it ran
    :param changed: every path ``git add -A`` staged (added, modified or deleted)
    :param metrics: ``dvc metrics show --json`` there
    """

    work: Path
    ran: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    metrics: dict[str, Any] = field(default_factory=dict)

    def lock(self, lockfile: str = "dvc.lock") -> dict[str, Any]:
        """A lock file of the by-hand run, parsed."""
        return yaml.safe_load((self.work / lockfile).read_text())

    def cached_hashes(self) -> set[str]:
        """The md5 of every output ``dvc push`` pushes from the by-hand workspace (what
        ``dvc import`` brought in stays in its source repository's remote)."""
        from dvc.repo import Repo

        with Repo(str(self.work)) as repo:
            return {
                out.hash_info.value
                for out in repo.index.outs
                if out.use_cache and out.hash_info.value and not out.stage.is_repo_import
            }


def dvc(project: LocalDvcProject, cwd: Path, *args: str) -> str:
    """Run the DVC command line in ``cwd`` with the project's environment."""
    env = project._env()
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {cwd}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def clone(project: LocalDvcProject, dest: Path, rev: str = "main") -> Path:
    """A clone of ``rev`` with the DVC remote and a cache of its own."""
    project.git("clone", "--quiet", "--branch", rev, str(project.remote), str(dest), cwd=project.work.parent)
    dvc(project, dest, "remote", "modify", "--local", "storage", "url", project.dvc_remote_url)
    dvc(project, dest, "config", "--local", "cache.dir", str(dest.parent / f"{dest.name}-cache"))
    return dest


def by_hand(project: LocalDvcProject, dest: Path, *targets: str) -> ByHand:
    """``git clone`` + ``dvc pull`` + ``dvc repro [targets...]`` + ``git add -A``; nothing pushed."""
    work = clone(project, dest)
    dvc(project, work, "pull", "--quiet", "--allow-missing")  # what never ran has nothing to pull
    ran: set[str] = set()
    for target in targets or ("",):
        said = dvc(project, work, "repro", *([target] if target else []))
        ran |= set(_RAN.findall(said))
    project.git("add", "-A", cwd=work)
    status = project.git("diff", "--cached", "--name-only", "--no-renames", "-z", cwd=work)
    metrics = json.loads(dvc(project, work, "metrics", "show", "--json").strip() or "{}")
    return ByHand(work=work, ran=ran, changed=set(filter(None, status.split("\0"))), metrics=metrics)


def stage_outcomes(xcom: dict[str, Any], *groups: str) -> dict[str, str]:
    """``{stage: outcome}`` from the stage tasks of the task groups ``groups`` in a run's XCom."""
    return {
        stage: outcome
        for task, result in xcom.items()
        if task.startswith(tuple(f"{group}." for group in groups))
        and not task.endswith(".resolve")
        and isinstance(result, dict)
        and "stages" in result
        for stage, outcome in result["stages"].items()
    }


def ran(xcom: dict[str, Any], *groups: str) -> set[str]:
    """The stages the stage tasks of ``groups`` ran."""
    return {stage for stage, outcome in stage_outcomes(xcom, *groups).items() if outcome == "ran"}


def branch_files(project: LocalDvcProject, base: str, branch: str) -> set[str]:
    """The paths a branch of the bare remote changed since ``base``."""
    out = project.git("diff", "--name-only", "--no-renames", "-z", base, branch, cwd=project.remote)
    return set(filter(None, out.split("\0")))


def blob(project: LocalDvcProject, rev: str, path: str) -> bytes:
    """A file's bytes at ``rev`` of the bare remote."""
    return subprocess.run(
        ["git", "cat-file", "blob", f"{rev}:{path}"], cwd=project.remote, capture_output=True, check=True
    ).stdout


def in_remote(project: LocalDvcProject, md5: str) -> bool:
    """Whether the local DVC remote holds the object ``md5`` (``.dir`` objects included)."""
    return (Path(project.dvc_remote_url) / "files" / "md5" / md5[:2] / md5[2:]).exists()


def assert_equal_to_by_hand(project: LocalDvcProject, hand: ByHand, *, sha: str, branch: str, scratch: Path) -> None:
    """The branch holds what ``git add -A`` held by hand, byte for byte (lock files compared
    parsed, in DVC's stage order); its metrics equal the by-hand ones; the remote holds every
    output the locks name."""
    committed = branch_files(project, sha, branch)
    assert committed == hand.changed, (
        f"only committed: {sorted(committed - hand.changed)}; only by hand: {sorted(hand.changed - committed)}"
    )
    for path in sorted(committed):
        ours = blob(project, branch, path) if (hand.work / path).exists() else None
        if path.endswith("dvc.lock"):
            mine, theirs = yaml.safe_load(ours or b""), hand.lock(path)
            assert mine == theirs, path
            assert list(mine["stages"]) == list(theirs["stages"]), f"{path}: stage order differs"
        elif ours is not None:
            assert ours == (hand.work / path).read_bytes(), f"{path} differs from the by-hand run"
    check = clone(project, scratch / "branch-check", branch)
    if "://" in project.dvc_remote_url:  # object storage: DVC itself says what the remote lacks
        # Nothing is pulled yet: "deleted" is in the remote only, "missing" is nowhere.
        status = json.loads(dvc(project, check, "status", "--cloud", "--json").strip() or "{}")
        missing = {path: said for path, said in status.items() if said != "deleted"}
        assert not missing, f"outputs missing from the DVC remote: {missing}"
    else:
        missing = sorted(md5 for md5 in hand.cached_hashes() if not in_remote(project, md5))
        assert not missing, f"outputs missing from the DVC remote: {missing}"
    dvc(project, check, "pull", "--quiet", "--allow-missing")
    assert json.loads(dvc(project, check, "metrics", "show", "--json").strip() or "{}") == hand.metrics


# ------------------------------------------------------------------------------ the projects


def _with_raw_data(root: Path, files: dict[str, str], raw_csv: str, **options: Any) -> LocalDvcProject:
    """A project of ``files`` whose ``data/raw.csv`` (``raw_csv``) DVC tracks, committed and pushed.

    ``options`` go to :func:`create_dvc_project` (another DVC remote, its options, environment)."""
    template = root / "template"
    write(template, files)
    return create_dvc_project(
        template,
        root / "project",
        track=["data/raw.csv"],
        prepare=lambda work: write(work, {"data/raw.csv": raw_csv}),
        **options,
    )


DVCLIVE = {
    "dvc.yaml": """
        stages:
          seed:
            cmd: python src/seed.py
            outs:
              - data/seed.txt
          train:
            cmd: python src/train.py
            deps:
              - src/train.py
              - data/raw.csv
              - data/seed.txt
            params:
              - train
            outs:
              - models/model.json
          evaluate:
            cmd: python src/evaluate.py
            deps:
              - src/evaluate.py
              - models/model.json
            outs:
              - eval/report.bin:
                  cache: false
        params:
          - params.yaml
        metrics:
          - dvclive/metrics.json
          - eval/metrics.json
        plots:
          - dvclive/plots/metrics:
              x: step
          - eval/plots/roc.json:
              template: linear
              x: fpr
              y: tpr
          - eval/plots/confusion.json:
              template: confusion
              x: actual
              y: predicted
        artifacts:
          scorer:
            path: models/model.json
            type: model
    """,
    "params.yaml": """
        train:
          epochs: 4
          rate: 0.5
    """,
    "src/seed.py": """
        import os

        os.makedirs("data", exist_ok=True)
        with open("data/seed.txt", "w") as f:
            f.write("17\\n")
    """,
    "src/train.py": """
        import csv
        import json
        import os

        import yaml
        from dvclive import Live

        params = yaml.safe_load(open("params.yaml"))["train"]
        seed = int(open("data/seed.txt").read())
        rows = list(csv.DictReader(open("data/raw.csv")))
        weight = 0.0
        with Live() as live:
            for epoch in range(params["epochs"]):
                weight += params["rate"] * (seed % 5 + 1) / (epoch + 1)
                live.log_metric("loss", round(1 / (1 + weight), 6))
                live.next_step()
        os.makedirs("models", exist_ok=True)
        json.dump({"weight": round(weight, 6), "rows": len(rows)}, open("models/model.json", "w"))
    """,
    "src/evaluate.py": """
        import json
        import os

        model = json.load(open("models/model.json"))
        os.makedirs("eval/plots", exist_ok=True)
        json.dump({"auc": round(model["weight"] / (1 + model["weight"]), 6), "rows": model["rows"]},
                  open("eval/metrics.json", "w"))
        json.dump([{"fpr": i / 4, "tpr": min(1, i / 3)} for i in range(5)], open("eval/plots/roc.json", "w"))
        json.dump([{"actual": a, "predicted": p} for a in (0, 1) for p in (0, 1)],
                  open("eval/plots/confusion.json", "w"))
        with open("eval/report.bin", "wb") as f:
            f.write(bytes(range(256)) * 1200)  # binary, past any small-file limit
    """,
}


def dvclive_project(root: Path, **options: Any) -> LocalDvcProject:
    """DVCLive's layout: top-level metrics/plots/params/artifacts, files written by later stages
    into folders that do not exist before, a stage with no dependencies, a binary uncached output;
    DVCLive rewrites ``dvc.yaml`` as it runs."""
    return _with_raw_data(root, DVCLIVE, "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(40)), **options)


TEMPLATED = {
    "dvc.yaml": """
        vars:
          - conf/paths.yaml
          - seed: 7
        stages:
          split:
            foreach: [a, b]
            do:
              cmd: python src/split.py ${item} ${seed}
              deps:
                - src/split.py
                - ${raw}
              outs:
                - data/split/${item}.csv
          featurize:
            foreach:
              small:
                rows: 5
              large:
                rows: 50
            do:
              cmd: python src/featurize.py ${key} ${item.rows}
              deps:
                - src/featurize.py
                - data/split/a.csv
              params:
                - params.json:
                    - scale
              outs:
                - features/${key}
          train:
            matrix:
              model: [lin, tree]
            cmd: python src/train.py ${item.model}
            deps:
              - src/train.py
              - features/small
              - features/large
              - data/split/b.csv
            params:
              - params.toml:
                  - train
              - conf/model.py:
                  - DEPTH
              - conf/train.yaml:
                  - lr
            outs:
              - models/${item.model}.bin:
                  cache: false
            metrics:
              - metrics/${item.model}.json:
                  cache: false
    """,
    "conf/paths.yaml": "raw: data/raw.csv\n",
    "params.json": '{"scale": 3}\n',
    "params.toml": "[train]\nepochs = 2\n",
    "conf/model.py": "DEPTH = 4\n",
    "conf/train.yaml": "lr: 0.25\n",
    "src/split.py": """
        import os
        import sys

        part, seed = sys.argv[1], int(sys.argv[2])
        lines = open("data/raw.csv").read().splitlines()[1:]
        keep = [line for i, line in enumerate(lines) if (i + seed) % 2 == (part == "b")]
        os.makedirs("data/split", exist_ok=True)
        open(f"data/split/{part}.csv", "w").write("\\n".join(keep) + "\\n")
    """,
    "src/featurize.py": """
        import json
        import os
        import sys

        name, rows = sys.argv[1], int(sys.argv[2])
        scale = json.load(open("params.json"))["scale"]
        os.makedirs(f"features/{name}", exist_ok=True)
        for i in range(rows):
            open(f"features/{name}/{i:03d}.txt", "w").write(f"{i * scale}\\n")
    """,
    "src/train.py": """
        import json
        import os
        import sys
        import tomllib

        import yaml

        model = sys.argv[1]
        epochs = tomllib.load(open("params.toml", "rb"))["train"]["epochs"]
        lr = yaml.safe_load(open("conf/train.yaml"))["lr"]
        depth = 4
        count = sum(len(os.listdir(f"features/{n}")) for n in ("small", "large"))
        os.makedirs("models", exist_ok=True)
        os.makedirs("metrics", exist_ok=True)
        open(f"models/{model}.bin", "wb").write(bytes([epochs, depth, count % 256]) * 100000)
        json.dump({"score": round(lr * epochs * (2 if model == "tree" else 1), 4), "features": count},
                  open(f"metrics/{model}.json", "w"))
    """,
}


def templated_project(root: Path) -> LocalDvcProject:
    """``vars`` (a file and inline), ``foreach`` over a list and a dict, ``matrix``, ``${}`` in
    cmd/deps/outs; params in YAML, JSON, TOML and Python files, in subfolders; directory and
    binary uncached outputs; parallel stages that both add to one ``.gitignore``."""
    return _with_raw_data(root, TEMPLATED, "id\n" + "".join(f"{i}\n" for i in range(30)))


MONOREPO = {
    "dvc.yaml": """
        stages:
          generate:
            cmd: python src/generate.py
            deps:
              - src/generate.py
            outs:
              - data/many
          count:
            cmd: python src/count.py
            deps:
              - src/count.py
              - data/many
            outs:
              - counts.json:
                  cache: false
                  persist: true
          stamp:
            cmd: python src/stamp.py
            always_changed: true
            deps:
              - counts.json
            outs:
              - stamp.txt:
                  cache: false
          legacy:
            cmd: python src/legacy.py
            deps:
              - src/legacy.py
            outs:
              - legacy.txt
    """,
    ".dvcignore": "*.tmp\n",
    "src/generate.py": """
        import os

        os.makedirs("data/many", exist_ok=True)
        for i in range(400):
            open(f"data/many/{i:05d}.txt", "w").write(f"{i}\\n")
        open("data/many/scratch.tmp", "w").write("ignored by .dvcignore\\n")
    """,
    "src/count.py": """
        import json
        import os

        names = [n for n in os.listdir("data/many") if n.endswith(".txt")]
        json.dump({"files": len(names), "version": 1}, open("counts.json", "w"))
    """,
    "src/stamp.py": """
        import json

        open("stamp.txt", "w").write(f"{json.load(open('counts.json'))['files']} files\\n")
    """,
    "src/legacy.py": 'open("legacy.txt", "w").write("legacy v1\\n")\n',
    "sub/dvc.yaml": """
        stages:
          tokens:
            cmd: python tokens.py
            deps:
              - tokens.py
              - input.txt
            outs:
              - tokens.txt
          summary:
            wdir: out
            cmd: python ../summary.py
            deps:
              - ../summary.py
              - ../tokens.txt
            metrics:
              - summary.json:
                  cache: false
    """,
    "sub/input.txt": "the quick brown fox jumps over the lazy dog\n",
    "sub/tokens.py": 'open("tokens.txt", "w").write("\\n".join(open("input.txt").read().split()) + "\\n")\n',
    "sub/summary.py": """
        import json
        import os

        os.makedirs(".", exist_ok=True)
        json.dump({"tokens": len(open("../tokens.txt").read().split())}, open("summary.json", "w"))
    """,
    "sub/out/.gitkeep": "",
}


def monorepo_project(root: Path) -> LocalDvcProject:
    """A root pipeline and ``sub/dvc.yaml`` (with ``wdir``); ``frozen``, ``always_changed``,
    ``persist``, a directory output of 400 files, ``.dvcignore``, and a committed ``dvc.lock``
    that is stale (the code of one stage changed since)."""
    template = root / "template"
    write(template, MONOREPO)
    project = create_dvc_project(template, root / "project")
    project.dvc("repro", "--quiet")
    project.dvc("repro", "--quiet", "sub/dvc.yaml")
    project.commit_and_push("Reproduce and commit the locks")
    count = project.work / "src" / "count.py"
    count.write_text(count.read_text().replace('"version": 1', '"version": 2'))
    legacy = project.work / "src" / "legacy.py"
    legacy.write_text(legacy.read_text().replace("v1", "v2"))  # frozen now: must not rerun
    dvc_yaml = project.work / "dvc.yaml"
    frozen = "cmd: python src/legacy.py\n    frozen: true\n"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("cmd: python src/legacy.py\n", frozen))
    assert "frozen: true" in dvc_yaml.read_text()
    project.commit_and_push("Change count.py, freeze legacy and change it; the lock is now stale", dvc_push=False)
    return project


IMPORTS = {
    "dvc.yaml": """
        stages:
          join:
            cmd: python src/join.py
            deps:
              - src/join.py
              - data/labels.csv
              - data/lookup.csv
            outs:
              - data/joined.csv
          score:
            cmd: python src/score.py
            deps:
              - src/score.py
              - data/joined.csv
            metrics:
              - score.json:
                  cache: false
    """,
    "src/join.py": """
        import csv

        weights = {row["id"]: int(row["weight"]) for row in csv.DictReader(open("data/lookup.csv"))}
        with open("data/joined.csv", "w") as out:
            out.write("id,label,weight\\n")
            for row in csv.DictReader(open("data/labels.csv")):
                out.write(f"{row['id']},{row['label']},{weights.get(row['id'], 0)}\\n")
    """,
    "src/score.py": """
        import csv
        import json

        rows = list(csv.DictReader(open("data/joined.csv")))
        json.dump({"rows": len(rows), "weight": sum(int(r["weight"]) for r in rows)}, open("score.json", "w"))
    """,
}


def imports_project(root: Path, served: Path, url: str) -> LocalDvcProject:
    """A project whose first stage depends on data brought in with ``dvc import`` from another
    git + DVC repository (a bare repository with its own DVC remote, built here) and with
    ``dvc import-url`` from ``url``, an HTTP server serving the folder ``served``.

    DVC does not push what ``dvc import`` brought in: a fresh clone's ``dvc pull`` fetches it
    from the source repository's remote.
    """
    source = _with_raw_data(
        root / "source", {"README": "Labels.\n"}, "id,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(12))
    )
    served.mkdir(parents=True, exist_ok=True)
    (served / "lookup.csv").write_text("id,weight\n" + "".join(f"{i},{i * 3 % 7}\n" for i in range(12)))

    def bring_in(work: Path) -> None:
        (work / "data").mkdir()
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        for args in (
            ("import", str(source.remote), "data/raw.csv", "-o", "data/labels.csv"),
            ("import-url", f"{url}/lookup.csv", "data/lookup.csv"),
        ):
            subprocess.run([sys.executable, "-m", "dvc", *args], cwd=work, env=env, check=True, capture_output=True)

    template = root / "template"
    write(template, IMPORTS)
    return create_dvc_project(template, root / "project", prepare=bring_in)
