"""A GPU worker's settings from the environment (gpu_worker/settings.py): how many models it keeps
loaded and which routes it loads at start."""

from __future__ import annotations

import json

import pytest

from gpu_worker.runner import default_max_loaded_models
from gpu_worker.settings import WorkerSettings
from tests.fixtures.gpu import tiny_route


def _route_message(**overrides) -> dict:
    return {**tiny_route(**overrides).__dict__}


def test_max_loaded_models_is_set_or_left_to_the_gpu():
    assert WorkerSettings.from_env({}).max_loaded_models is None
    assert WorkerSettings.from_env({"GPU_MAX_LOADED_MODELS": "3"}).max_loaded_models == 3
    with pytest.raises(ValueError, match="GPU_MAX_LOADED_MODELS must be an integer >= 1"):
        WorkerSettings.from_env({"GPU_MAX_LOADED_MODELS": "0"})


def test_one_job_may_be_in_its_cpu_tail_beside_the_gpus_unless_set_otherwise():
    assert WorkerSettings.from_env({}).tail_threads == 1
    assert WorkerSettings.from_env({"GPU_TAIL_THREADS": "0"}).tail_threads == 0


@pytest.mark.parametrize(
    ("total_gb", "expected"),
    [(85.0, 2), (80.0, 2), (48.0, 1), (24.0, 1)],
    ids=["h100", "80g", "l40s", "4090"],
)
def test_two_models_stay_loaded_on_an_80_gb_gpu_and_one_below(monkeypatch, total_gb, expected):
    import torch

    class Properties:
        total_memory = int(total_gb * 10**9)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties())

    assert default_max_loaded_models("cuda") == expected
    assert default_max_loaded_models("cpu") == 1


def test_preload_routes_come_inline_or_from_a_file(tmp_path):
    routes = [_route_message(name="tiny-a"), _route_message(name="tiny-b", steps=4)]
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(routes))

    inline = WorkerSettings.from_env({"GPU_PRELOAD_ROUTES": json.dumps(routes)}).preload_routes
    from_file = WorkerSettings.from_env({"GPU_PRELOAD_ROUTES": str(path)}).preload_routes

    assert inline == from_file == (tiny_route(name="tiny-a"), tiny_route(name="tiny-b", steps=4))
    assert WorkerSettings.from_env({}).preload_routes == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[{", "not JSON or the path of a readable JSON file"),
        ("/nowhere/routes.json", "not JSON or the path of a readable JSON file"),
        ('{"name": "tiny-wan"}', "must be a JSON list of routes"),
        ("[1]", "a route must be a mapping"),
        (json.dumps([{**_route_message(), "family": "sd15"}]), "unknown pipeline family"),
        (json.dumps([{"name": "tiny-wan"}]), "malformed route"),
    ],
    ids=["bad-json", "missing-file", "not-a-list", "not-a-route", "bad-family", "missing-fields"],
)
def test_bad_preload_routes_are_refused_with_the_reason(value, message):
    with pytest.raises(ValueError, match=message):
        WorkerSettings.from_env({"GPU_PRELOAD_ROUTES": value})
