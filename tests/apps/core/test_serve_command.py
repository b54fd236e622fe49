"""`manage.py serve`'s choice of server processes: several only in services mode (the live test of two is
tests/integration/test_serve_processes.py). uvicorn.run is the edge replaced here: nothing is served."""

from __future__ import annotations

import io
import os

import pytest
import uvicorn
from django.core.management import CommandError, call_command


@pytest.fixture
def uvicorn_runs(monkeypatch) -> list[dict]:
    runs: list[dict] = []

    def run(app, **options) -> None:
        runs.append({"app": app, **options, "metrics_dir": os.environ.get("PROMETHEUS_MULTIPROC_DIR")})

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return runs


def _serve(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("serve", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_embedded_mode_serves_from_one_process_and_says_why(settings, uvicorn_runs):
    settings.DRAMATIQ_BROKER, settings.EMBEDDED_WORKER = "stub", True
    out, err = _serve("--web-processes=3")
    assert [(run["workers"], run["metrics_dir"]) for run in uvicorn_runs] == [(1, None)]
    assert "--web-processes 3 ignored: the embedded mode (no REDIS_URL) serves from one process" in err
    assert "Processes: 1 server process with the worker threads" in out


def test_the_services_mode_starts_uvicorn_workers_that_share_one_metrics_folder(settings, uvicorn_runs):
    settings.DRAMATIQ_BROKER, settings.EMBEDDED_WORKER = "redis", True  # worker threads: no child processes
    out, _ = _serve("--web-processes=2")
    [run] = uvicorn_runs
    assert (run["app"], run["workers"]) == ("backend.asgi:application", 2)  # each process imports the app
    assert "Processes: 2 server processes" in out
    assert run["metrics_dir"] and f"PROMETHEUS_MULTIPROC_DIR={run['metrics_dir']}" in out
    # Removed when the server stops, and this process is as before.
    assert not os.path.exists(run["metrics_dir"])
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_web_processes_below_one_are_refused(settings, uvicorn_runs):
    with pytest.raises(CommandError, match="must be 1 or more, got 0"):
        _serve("--web-processes=0")
    assert uvicorn_runs == []
