"""DvcDataChangedSensor under dag.test(): fires on the first run, not on a touch, and on a
real change while it waits in its trigger; the last digest comes back through inlet events."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest

from tests.helpers.demo_project import new_data

DAG_ID = "mlci_data_sensor"
DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, Asset

    from airflow_provider_mlci.sensors.dvc import DvcDataChangedSensor

    RAW = Asset("x-dvc-data://sensor-test/raw")

    with DAG(dag_id="mlci_data_sensor", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        DvcDataChangedSensor(
            task_id="new_data", targets=["data/raw.csv"], asset=RAW, rev="main",
            poke_interval=1,
        )
    """
)


@pytest.fixture
def watched(dvc_project, dvc_connection, monkeypatch, worker_cache):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    return dvc_project


@pytest.mark.timeout(300, method="thread")
def test_first_run_fires_then_a_touch_does_not_and_a_change_does(run_dag, watched, monkeypatch):
    from airflow_provider_mlci.triggers.dvc import DvcDataChangedTrigger

    looks = []
    real_fingerprint = DvcDataChangedTrigger.fingerprint

    def counted(self):
        result = real_fingerprint(self)
        looks.append(result["digest"])
        return result

    monkeypatch.setattr(DvcDataChangedTrigger, "fingerprint", counted)

    first = run_dag(DAG_ID, source=DAG_SOURCE)
    assert first.task_states == {"new_data": "success"}
    digest = first.xcom["new_data"]["digest"]
    assert first.xcom["new_data"]["items"]["data/raw.csv"].startswith("md5:")

    # A touch: the same data committed again (a new commit, same md5).
    (watched.work / "data" / "raw.csv").touch()
    watched.dvc("add", "--quiet", "data/raw.csv")
    touch_sha = watched.commit_and_push("Touch the data")

    # dag.test() must run in the main thread; the data changes from another one, once the
    # sensor's trigger has looked at the touched data several times (poke_interval=1).
    looks_before_change = []

    def change_data_later():
        deadline = time.monotonic() + 60
        while len(looks) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        looks_before_change.extend(looks)
        new_data(watched, seed=42)

    thread = threading.Thread(target=change_data_later)
    thread.start()
    changed = run_dag(DAG_ID, source=DAG_SOURCE)
    thread.join(120)
    assert len(looks_before_change) >= 3, "the sensor did not wait in its trigger after the touch"
    assert set(looks_before_change) == {digest}, "the touched data must fingerprint as before"
    assert touch_sha != first.xcom["new_data"]["sha"]
    assert changed.task_states == {"new_data": "success"}
    assert changed.xcom["new_data"]["digest"] != digest
    assert changed.xcom["new_data"]["sha"] == watched.head()
