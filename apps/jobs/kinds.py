"""What a kind of GPU job tells the one lifecycle (apps/jobs/lifecycle.py).

A kind is one module per domain (apps/generations/jobs.py, apps/characters/jobs.py): it subclasses
`JobKind`, fills in the hooks below and registers an instance with `register` when its app is ready.
The hooks only read and write the kind's own rows; sending, settling credits, cancel flags, pushes and
the watchdog are the lifecycle's.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from django.db import models

from gpu_worker.contract import JOB_TYPES, ContractError, JobEvent


class Outcome(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class JobUnavailable(Exception):
    """The job's attempt cannot be sent (its route was deleted, say): it fails with `code`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Job:
    """One attempt of a job as the lifecycle sees it, read by the kind with its rows locked."""

    job_id: str
    attempt: int
    last_sequence: int  # the last worker event sequence applied
    running: bool  # a worker has started it (an event came), else it waits in its lane
    finished: bool  # a terminal state, or deleted: events change nothing any more
    since: dt.datetime  # running: its last sign of life; waiting: when it was queued
    hold_owner: models.Model | None  # the row that owns the credit hold (apps/credits)
    row: Any  # the kind's own locked object(s)


class JobKind:
    """The hooks of one kind of GPU job. All but `message_fields` and `candidates` run inside the
    transaction that holds the job's rows locked."""

    job_type: str = ""
    job_id_field: str = "pk"  # the field of the rows of `candidates` and `unsent` that holds the job id
    # An earlier attempt's `completed` event still counts (the later attempt is stopped).
    late_completion_wins: bool = False

    # 1. Rows and timing
    def lock(self, job_id: str, *, attempt: int | None = None) -> Job | None:
        """The job locked for update (of that attempt, if given); None when it does not exist."""
        raise NotImplementedError

    def stuck_after(self) -> dt.timedelta:
        """A running job silent for this long lost its worker."""
        raise NotImplementedError

    def max_wait(self) -> dt.timedelta:
        """A job waiting in its lane for this long expires."""
        raise NotImplementedError

    def candidates(self, *, stuck_before: dt.datetime, queued_before: dt.datetime) -> models.QuerySet:
        """The rows of running jobs silent since `stuck_before` and of jobs waiting since `queued_before`
        (the reaper's sweep), with the fields `job_id_field` and `attempt`."""
        raise NotImplementedError

    def unsent(self, *, queued_before: dt.datetime) -> models.QuerySet:
        """The rows of jobs queued before then whose message never reached the broker."""
        raise NotImplementedError

    # 2. Messages
    def message_fields(self, job_id: str, attempt: int, *, row: Any = None) -> dict[str, Any] | None:
        """The Dramatiq message of an attempt (gpu_worker.contract's builder), None when that attempt
        is no longer waiting to be sent; JobUnavailable when it can never be sent. `row`: the job's row
        as the committed transaction that queued it wrote it (a create), when the sender has it; a kind
        may build the message from it instead of reading the row again."""
        raise NotImplementedError

    def sent(self, job_id: str, attempt: int, message_id: str) -> None:
        """Records that the attempt's message reached the broker."""

    # 3. Transitions (rows locked)
    def seen(self, job: Job, event: JobEvent) -> None:
        """Records an event that will be applied (its sequence, the time)."""
        raise NotImplementedError

    def progress(self, job: Job, event: JobEvent) -> None:
        raise NotImplementedError

    def outputs_valid(self, job: Job, event: JobEvent) -> bool:
        """Whether a completed event's outputs can be delivered (else the job fails INTERNAL)."""
        return True

    def succeed(self, job: Job, event: JobEvent, *, charged: bool) -> None:
        """Delivers the outputs; `charged` says whether the hold was captured now."""
        raise NotImplementedError

    def review_needed(self, job: Job, event: JobEvent) -> bool:
        """Whether a completed job's outputs wait for a staff review instead of being delivered (image
        moderation flagged them); its hold is then released, not captured."""
        return False

    def hold_for_review(self, job: Job, event: JobEvent) -> None:
        """Keeps the outputs of a job that `review_needed` from its user, for staff to decide."""
        raise NotImplementedError

    def retry(self, job: Job, *, code: str, message: str) -> float | None:
        """Requeues a retryable failure as a new attempt and returns its delay in seconds, or None when
        the kind will not retry it (the job then fails)."""
        return None

    def end(self, job: Job, *, outcome: Outcome, code: str, message: str, retryable: bool) -> None:
        """Writes a terminal state other than success (the hold is released by the lifecycle)."""
        raise NotImplementedError

    def failure_message(self, code: str, worker_message: str = "") -> str:
        """What the user is told for a failure code."""
        return worker_message or code

    def final(self, job: Job, event: JobEvent) -> None:
        """An event for a finished job: nothing changes, but stray outputs may be removed."""

    def gone(self, event: JobEvent) -> None:
        """An event for a job that does not exist (any more): its outputs may be removed."""

    def notify(self, job: Job, *, succeeded: bool) -> None:
        """Records the push for a finished job (sent after the commit)."""


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    if kind.job_type not in JOB_TYPES:
        raise ValueError(f"unknown job type {kind.job_type!r}; add it to gpu_worker.contract.JOB_TYPES")
    _KINDS[kind.job_type] = kind
    return kind


def kind_for(job_type: str) -> JobKind:
    try:
        return _KINDS[job_type]
    except KeyError:
        raise ContractError(f"no job kind is registered for {job_type!r}") from None


def registered_kinds() -> list[JobKind]:
    return list(_KINDS.values())
