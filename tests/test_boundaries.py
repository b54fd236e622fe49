"""Import boundaries (CONVENTIONS.md): apps never import graphql_schema; gpu_worker never imports Django or
the backend; Django code imports from gpu_worker only its contract (and the log context's middleware, which
is the contract's plus Dramatiq)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts)


def _violations(folder: str, forbidden) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(folder)
        for name in _imports(path)
        if forbidden(name)
    ]


def test_apps_never_import_the_graphql_layer():
    assert _violations("apps", lambda name: name.split(".")[0] == "graphql_schema") == []


def test_gpu_worker_imports_no_django_and_no_backend_code():
    def forbidden(name: str) -> bool:
        return name.split(".")[0] in {"django", "apps", "backend", "graphql_schema", "channels", "strawberry"}

    assert _violations("gpu_worker", forbidden) == []


# What both sides share: the contract (standard library only) and the Dramatiq middleware that carries its
# log context (the standard library, Dramatiq and the contract), so no torch reaches a Django process.
GPU_SHARED_MODULES = {"gpu_worker.contract": set(), "gpu_worker.log_context": {"dramatiq", "gpu_worker"}}

# The one exception: backend/embedded.py starts the GPU lanes inside the server in the embedded mode
# (gpu_worker.actors.start_embedded, with a gpu_worker.storage view of the configured storage).
EMBEDDED_GPU_IMPORTS = {"backend/embedded.py": {"gpu_worker.actors", "gpu_worker.storage"}}


@pytest.mark.parametrize("folder", ["apps", "backend", "graphql_schema", "rest_api"])
def test_django_code_imports_only_what_it_shares_with_the_gpu_worker(folder):
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(folder)
        for name in _imports(path)
        if name.split(".")[0] == "gpu_worker"
        and name not in GPU_SHARED_MODULES
        and name not in EMBEDDED_GPU_IMPORTS.get(path.relative_to(ROOT).as_posix(), set())
    ]
    assert violations == []


def test_the_embedded_gpu_exception_is_used_where_it_is_allowed():
    """The exception above is real (the file imports exactly those modules) and stays that narrow."""
    for path, allowed in EMBEDDED_GPU_IMPORTS.items():
        gpu_imports = {name for name in _imports(ROOT / path) if name.split(".")[0] == "gpu_worker"}
        assert gpu_imports == allowed


@pytest.mark.parametrize("module", sorted(GPU_SHARED_MODULES))
def test_what_django_shares_with_the_gpu_worker_imports_no_more_than_its_allowance(module):
    import sys

    imports = _imports(ROOT / f"{module.replace('.', '/')}.py")
    allowed = set(sys.stdlib_module_names) | {"__future__"} | GPU_SHARED_MODULES[module]
    assert {name.split(".")[0] for name in imports} <= allowed
    # of gpu_worker, only the contract (itself standard library only)
    assert {name for name in imports if name.split(".")[0] == "gpu_worker"} <= {"gpu_worker.contract"}


# --- Rules import-linter cannot express (it sees modules, not names) -----------------------------------


def _names(path: Path) -> list[tuple[int, str]]:
    """(line, name) for every name, imported name and attribute in the file; an attribute is `.attr`, and
    also `module.attr` when read from a plain name (`dramatiq.Message`)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, f".{node.attr}"))
            if isinstance(node.value, ast.Name):
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom):
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _uses(folders: tuple[str, ...], is_forbidden, allowed: set[str]) -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {}
    for folder in folders:
        for path in _files(folder):
            relative = path.relative_to(ROOT).as_posix()
            if relative in allowed:
                continue
            hits = sorted({f"{line}: {name}" for line, name in _names(path) if is_forbidden(name)})
            if hits:
                uses[relative] = hits
    return uses


# Sending a GPU job: naming a GPU actor, making or enqueueing a Dramatiq message, or touching a job's
# cancel flag or a route's held key. A kind of job (apps/<domain>/jobs.py) only describes its message
# (`*_message_fields`); apps/jobs/dispatch.py is the one module that sends it, sets or clears its cancel
# flag and reads which routes the GPU workers hold.
GPU_SEND_NAMES = {"ACTOR_RUN_GENERATION", "ACTOR_TRAIN_CHARACTER", "cancel_key", "route_held_key"}
GPU_JOB_MODULE = "apps/jobs/dispatch.py"


def _gpu_job_senders() -> dict[str, list[str]]:
    def forbidden(name: str) -> bool:
        return name.lstrip(".") in GPU_SEND_NAMES or name in {".enqueue", "dramatiq.Message"}

    return _uses(("apps", "backend", "graphql_schema"), forbidden, allowed={GPU_JOB_MODULE})


def test_only_the_job_module_sends_gpu_jobs():
    assert _gpu_job_senders() == {}


def test_only_the_events_module_talks_to_the_channel_layer():
    """The import-linter contract sees the `channels` package as one node; this sees the names.
    Subscriptions listen through strawberry's consumer (graphql_schema/ws.py), which names none of them."""

    def forbidden(name: str) -> bool:
        return name.startswith("channels.layers") or name.lstrip(".") in {
            "get_channel_layer",
            "channel_layer",
            "group_send",
        }

    assert _uses(("apps", "backend", "graphql_schema"), forbidden, allowed={"apps/core/events.py"}) == {}
