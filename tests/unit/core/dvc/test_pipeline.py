from __future__ import annotations

import textwrap

import pytest

from airflow_provider_mlci.core.dvc.pipeline import PipelineSpec, load_pipeline
from airflow_provider_mlci.exceptions import DvcFileError, MlciConfigError
from tests.conftest import DEMO_PROJECT


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_demo_pipeline_graph_comes_from_its_paths():
    spec = load_pipeline(DEMO_PROJECT)
    assert list(spec.stages) == ["prepare", "train", "evaluate"]
    assert spec.graph() == {"prepare": [], "train": ["prepare"], "evaluate": ["train"]}
    evaluate = spec.stages["evaluate"]
    assert {(o.path, o.cache, o.kind) for o in evaluate.outs} == {
        ("metrics.json", False, "metric"),
        ("eval/predictions.csv", False, "plot"),
        ("eval/roc.csv", False, "plot"),
        ("eval/scores.csv", False, "plot"),
        ("eval/importance.svg", False, "plot"),
    }
    assert spec.ancestors("evaluate") == ["prepare", "train"]


def test_wdir_and_subfolder_pipelines_resolve_paths_from_the_repository_root(tmp_path):
    write(
        tmp_path / "sub" / "dvc.yaml",
        """
        stages:
          make:
            wdir: work
            cmd: make
            outs: [build/out]
          use:
            cmd: use
            deps: [work/build/out/part.bin]
        """,
    )
    spec = load_pipeline(tmp_path, "sub/dvc.yaml")
    assert list(spec.stages) == ["sub/dvc.yaml:make", "sub/dvc.yaml:use"]
    assert spec.stages["sub/dvc.yaml:make"].outs[0].path == "sub/work/build/out"
    assert spec.graph()["sub/dvc.yaml:use"] == ["sub/dvc.yaml:make"]


def test_templated_pipelines_are_expanded_by_dvc_and_cached(tmp_path):
    write(tmp_path / "params.yaml", "regions: [us, eu]\n")
    write(
        tmp_path / "dvc.yaml",
        """
        stages:
          build:
            foreach: ${regions}
            do:
              cmd: build ${item}
              deps:
                - raw/${item}.csv
              outs:
                - built/${item}
          train:
            matrix:
              model: [a, b]
            cmd: train ${item.model}
            deps:
              - built
            outs:
              - models/${item.model}.pkl
        """,
    )
    cache = tmp_path / "render-cache"
    spec = load_pipeline(tmp_path, render_cache=cache)
    assert list(spec.stages)[:2] == ["build@us", "build@eu"]
    assert spec.graph()["train@a"] == ["build@eu", "build@us"]
    assert len(list(cache.glob("*.json"))) == 1
    again = load_pipeline(tmp_path, render_cache=cache)
    assert again == spec
    write(tmp_path / "params.yaml", "regions: [us, eu, ap]\n")
    changed = load_pipeline(tmp_path, render_cache=cache)
    assert "build@ap" in changed.stages, "a params change must invalidate the cached expansion"


def test_select_and_exclude_by_glob():
    spec = load_pipeline(DEMO_PROJECT)
    assert list(spec.select(["train", "evaluate"]).stages) == ["train", "evaluate"]
    assert spec.select(["train", "evaluate"]).graph() == {"train": [], "evaluate": ["train"]}
    assert list(spec.select(exclude=["prep*"]).stages) == ["train", "evaluate"]
    with pytest.raises(MlciConfigError, match=r"No stage of dvc\.yaml matches 'trian'"):
        spec.select(["trian"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages: [a, b]\n", "must be a mapping"),
        ("stages:\n  a:\n    deps: [x]\n", "has no 'cmd'"),
        ("stages:\n  a: {cmd: x\n", "not valid YAML"),
        (
            "stages:\n  a:\n    cmd: a\n    deps: [y]\n    outs: [x]\n  b:\n    cmd: b\n    deps: [x]\n    outs: [y]\n",
            "cycle",
        ),
    ],
)
def test_malformed_files_are_named(tmp_path, text, message):
    (tmp_path / "dvc.yaml").write_text(text)
    with pytest.raises(DvcFileError, match=message) as info:
        load_pipeline(tmp_path)
    assert "dvc.yaml" in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DvcFileError, match=r"dvc\.yaml"):
        load_pipeline(tmp_path)


def test_json_round_trip():
    spec = load_pipeline(DEMO_PROJECT)
    assert PipelineSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("push: false", r"dvc.yaml: stage 'train', output 'model.pkl' has 'push: false'.*mode='single'"),
        ("remote: other", r"dvc.yaml: stage 'train', output 'model.pkl' names its own remote \('other'\)"),
    ],
)
def test_outputs_another_worker_could_not_reach_fail_at_parse_naming_the_feature(tmp_path, options, message):
    write(
        tmp_path / "dvc.yaml",
        f"""
        stages:
          train:
            cmd: python train.py
            outs:
              - model.pkl:
                  {options}
        """,
    )
    with pytest.raises(DvcFileError, match=message):
        load_pipeline(tmp_path)


def test_templated_outputs_are_checked_too(tmp_path):
    (tmp_path / ".dvc").mkdir()
    write(
        tmp_path / "dvc.yaml",
        """
        vars:
          - name: model.pkl
        stages:
          train:
            cmd: python train.py
            outs:
              - ${name}:
                  push: false
        """,
    )
    with pytest.raises(DvcFileError, match=r"stage 'train', output 'model.pkl' has 'push: false'"):
        load_pipeline(tmp_path, render_cache=tmp_path / "render")


def test_a_stage_inside_a_dvc_subrepo_fails_at_parse_naming_the_subrepo(tmp_path):
    (tmp_path / "libs" / "features" / ".dvc").mkdir(parents=True)
    write(
        tmp_path / "dvc.yaml",
        """
        stages:
          build:
            cmd: python build.py
            deps:
              - libs/features/data.csv
            outs:
              - features.csv
        """,
    )
    with pytest.raises(
        DvcFileError, match=r"stage 'build' uses 'libs/features/data.csv', inside the DVC subrepo libs/features/"
    ):
        load_pipeline(tmp_path)


def test_the_stages_at_a_commit_are_checked_against_the_rendered_ones():
    from airflow_provider_mlci.core.dvc.pipeline import check_stages_match
    from airflow_provider_mlci.exceptions import DvcPipelineMismatchError

    graph = {"prepare": [], "train": ["prepare"], "sub/dvc.yaml:eval": ["train"]}
    assert check_stages_match(graph, {"train": ["prepare"], "prepare": []}) == {"prepare": [], "train": ["prepare"]}
    assert check_stages_match(graph, {"sub/dvc.yaml:eval": ["train"]}, dvc_file="sub/dvc.yaml") == {
        "sub/dvc.yaml:eval": ["train"]
    }
    with pytest.raises(DvcPipelineMismatchError) as info:
        check_stages_match(graph, {"prepare": [], "train": [], "score": ["train"]}, where="main (abc123)")
    assert str(info.value) == (
        "The pipeline in dvc.yaml at main (abc123) is not the one this DAG was rendered from (stages removed: "
        "score; stage train now depends on [prepare], not []). Update the DAG's copy of the project."
    )
