"""The job and event contract between the backend and the GPU workers.

Standard library only: both the Django backend and the GPU worker processes import this module, and
nothing else crosses the boundary. Messages carry `version`; a reader refuses a major version it does
not know instead of guessing. Queue and actor names that cross processes live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CONTRACT_VERSION = 1

# --- Queues (Dramatiq queue names) ------------------------------------------------------------
# GPU lanes: consumed only by `python -m gpu_worker`. A GPU worker listens to every lane, so an idle
# GPU never waits while any lane has work; the lane decides the order inside the worker.
QUEUE_GPU_INSTANT = "gpu-instant"
QUEUE_GPU_ECONOMY = "gpu-economy"
QUEUE_GPU_TRAINING = "gpu-training"
GPU_QUEUES: tuple[str, ...] = (QUEUE_GPU_INSTANT, QUEUE_GPU_ECONOMY, QUEUE_GPU_TRAINING)

# Backend queue that receives the workers' events (consumed by Django workers).
QUEUE_JOB_EVENTS = "job-events"

# --- Actor names ------------------------------------------------------------------------------
ACTOR_RUN_GENERATION = "gpu_run_generation"
ACTOR_TRAIN_CHARACTER = "gpu_train_character"
ACTOR_JOB_EVENT = "backend_job_event"


class ContractError(ValueError):
    """A message that does not follow this contract."""


@dataclass(frozen=True)
class JobEvent:
    """An event a GPU worker reports about one job.

    `kind` is one of `progress`, `stage`, `completed`, `failed`. Progress is best-effort; completed and
    failed are terminal and handled idempotently by the backend, which ignores a `sequence` it has seen.
    """

    job_id: str
    sequence: int
    kind: str
    stage: str | None = None
    progress: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reason_code: str | None = None
    retryable: bool = False
    message: str = ""
    version: int = CONTRACT_VERSION

    KINDS = ("progress", "stage", "completed", "failed")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ContractError(f"unknown event kind {self.kind!r}; expected one of {self.KINDS}")
        if not 0.0 <= self.progress <= 1.0:
            raise ContractError(f"progress must be within 0..1, got {self.progress}")

    @property
    def is_terminal(self) -> bool:
        return self.kind in ("completed", "failed")

    def to_message(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> JobEvent:
        version = data.get("version")
        if version != CONTRACT_VERSION:
            raise ContractError(f"unsupported event version {version!r}; this side speaks {CONTRACT_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
