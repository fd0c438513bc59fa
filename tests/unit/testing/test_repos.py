from __future__ import annotations


def test_remote_tags_peels_annotated_tags_keeps_lightweight_ones_and_filters_by_prefix(dvc_project):
    head = dvc_project.head()
    dvc_project.git("tag", "-a", "model@v1", "-m", "a release", head)
    dvc_project.git("tag", "model#prod#1", head)
    dvc_project.git("tag", "other", head)
    dvc_project.git("push", "--quiet", "origin", "--tags")
    annotated = dvc_project.git("rev-parse", "refs/tags/model@v1", cwd=dvc_project.remote).strip()
    assert annotated != head  # the tag object, not the commit
    assert dvc_project.remote_tags() == {"model@v1": head, "model#prod#1": head, "other": head}
    assert dvc_project.remote_tags("model") == {"model@v1": head, "model#prod#1": head}
    assert dvc_project.remote_tags("none") == {}
