from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from airflow_provider_mlci.triggers.dvc import DvcDataChangedTrigger


def make_trigger(**overrides):
    kwargs = {
        "dvc_conn_id": "mlci_dvc_default",
        "targets": ["data/raw.csv"],
        "rev": "main",
        "poll_interval": 0.2,
        **overrides,
    }
    return DvcDataChangedTrigger(**kwargs)


def test_serialize_round_trips_plain_values():
    trigger = make_trigger(last_digest="abc", watch="source", cache_dir="/c")
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_mlci.triggers.dvc.DvcDataChangedTrigger"
    again = DvcDataChangedTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert all(isinstance(v, (str, float, int, list, type(None))) for v in kwargs.values())


async def first_event(trigger, timeout: float):
    return await asyncio.wait_for(anext(trigger.run()), timeout)


@pytest.fixture
def watched(dvc_project, dvc_connection, worker_cache, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(str(dvc_project.remote))
    return dvc_project


def test_as_a_deferral_it_fires_once_on_a_difference(watched):
    event = asyncio.run(first_event(make_trigger(last_digest=None), 60))
    assert event.payload["status"] == "changed"
    digest = event.payload["digest"]
    with pytest.raises(TimeoutError):
        asyncio.run(first_event(make_trigger(last_digest=digest), 2))


def test_errors_end_a_deferral_with_the_error_named(watched):
    event = asyncio.run(first_event(make_trigger(targets=["src/not_tracked.py"]), 60))
    assert event.payload["status"] == "error"
    assert event.payload["type"] == "DvcStageNotFoundError"
    assert "src/not_tracked.py" in event.payload["message"]


class MemoryStateStore:
    """Stands in for the asset state store the triggerer injects into watcher triggers (the
    real one needs a running triggerer and API server; the cluster test uses it)."""

    def __init__(self, digest=None):
        self.values = {"digest": digest} if digest else {}

    async def aget(self, key, default=None):
        return self.values.get(key, default)

    async def aset(self, key, value):
        self.values[key] = value


def test_as_a_watcher_it_keeps_watching_and_remembers_what_it_saw(watched):
    async def scenario():
        trigger = make_trigger()
        trigger.asset_state_store = MemoryStateStore()
        events = trigger.run()
        first = await asyncio.wait_for(anext(events), 60)
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        assert not pending.done(), "fired again without a change"
        remembered = trigger.asset_state_store.values["digest"]  # kept once the event was taken
        subprocess.run(
            [sys.executable, "src/generate.py", "data/raw.csv", "--rows", "100", "--seed", "77"],
            cwd=watched.work,
            check=True,
        )
        watched.dvc("add", "--quiet", "data/raw.csv")
        await asyncio.to_thread(watched.commit_and_push, "New data")
        second = await asyncio.wait_for(pending, 60)
        after = asyncio.ensure_future(anext(events))  # let it take the event and go on watching
        await asyncio.sleep(0.5)
        after.cancel()
        return first, remembered, second, trigger.asset_state_store.values["digest"]

    first, remembered, second, now = asyncio.run(scenario())
    assert first.payload["digest"] == remembered
    assert second.payload["digest"] != first.payload["digest"]
    assert now == second.payload["digest"]


def test_a_restarted_watcher_does_not_fire_for_what_it_already_saw(watched):
    async def scenario():
        seen = await anext(make_trigger().run())
        trigger = make_trigger()
        trigger.asset_state_store = MemoryStateStore(seen.payload["digest"])
        return await asyncio.wait_for(anext(trigger.run()), 2)

    with pytest.raises(TimeoutError):
        asyncio.run(scenario())


@pytest.mark.parametrize("in_triggerer", [True, False])
def test_before_airflow_3_3_a_watcher_without_a_state_store_keeps_watching(watched, in_triggerer):
    # Airflow 3.1/3.2 give watchers no state store: the triggerer's job id without a task instance
    # tells a watcher (which must go on) from a task's deferral (which ends after its event).
    async def scenario():
        trigger = make_trigger()
        trigger.asset_state_store = None
        trigger.task_instance = None
        if in_triggerer:
            trigger.triggerer_job_id = 1
        events = trigger.run()
        first = await asyncio.wait_for(anext(events), 60)
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        ended = pending.done() and isinstance(pending.exception(), StopAsyncIteration)
        pending.cancel()
        return first, ended

    first, ended = asyncio.run(scenario())
    assert first.payload["status"] == "changed"
    assert ended is not in_triggerer
