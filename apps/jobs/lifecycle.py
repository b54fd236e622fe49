"""One lifecycle for every kind of GPU job: send an attempt, apply its events, end it, watch it.

What every kind shares lives here once; each kind plugs in with the hooks of `apps/jobs/kinds.py`:
- `job_dispatch` sends an attempt after the commit that queued it (through apps/jobs/dispatch.py, the only
  sender) and schedules its watchdog;
- `job_event_apply` applies one event of a GPU worker: repeated and stale sequence numbers are ignored,
  terminal states are final, the credit hold is captured exactly once on success and released on every
  other end, and terminal states are pushed; an output that moderation flagged is released and held for
  review instead (the kind's `review_needed` / `hold_for_review`);
- `job_finish` ends a job from the backend (a cancel, an expiry, a deletion) with the same settlement, and
  `job_retry_or_fail` requeues a retryable failure or ends it;
- `job_watchdog` checks one attempt (a silent worker, a wait too long) and `jobs_reap` sweeps every kind.

Money: credits are held by the kind when the job is created (in the same transaction); the ledger settles
a hold once (compare-and-set), and every transition here runs with the job's rows locked, so a repeated or
late event settles nothing twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Any

import dramatiq
from django.db import transaction
from django.utils import timezone

from apps.credits.services import credits_capture, credits_release
from gpu_worker.contract import CANCELED, INTERNAL, WORKER_LOST, JobEvent

from . import dispatch
from .kinds import Job, JobKind, JobUnavailable, Outcome, kind_for, registered_kinds

logger = logging.getLogger(__name__)

EXPIRED = "EXPIRED"  # a backend reason: no GPU worker took the job in time
WATCHDOG_ACTOR = "job_watchdog_task"  # apps/jobs/tasks.py
UNSENT_AFTER = dt.timedelta(seconds=60)  # a queued job with no message after this was never sent


# --- Sending ------------------------------------------------------------------------------------


def job_dispatch_on_commit(
    kind: JobKind, *, job_id: str, attempt: int, delay_seconds: float = 0, row: Any = None
) -> None:
    """Sends the attempt once the current transaction commits (never from inside it). `row`: the job's
    row as this transaction wrote it (a create), for the kind to build the message from (see
    `job_dispatch`)."""
    transaction.on_commit(
        functools.partial(
            job_dispatch,
            job_type=kind.job_type,
            job_id=job_id,
            attempt=attempt,
            delay_seconds=delay_seconds,
            row=row,
        ),
        robust=True,
    )


def job_dispatch(
    *, job_type: str, job_id: str, attempt: int, delay_seconds: float = 0, row: Any = None
) -> str | None:
    """Sends the message of `attempt` if it still waits to be sent, then schedules its watchdog. Returns
    the message id, or None when there was nothing to send.

    With `row` (the job's row as the committed transaction that queued it wrote it), the kind may build
    the message without reading the row again: a cancel that commits between that commit and the send is
    then stopped by its cancel flag, which the GPU worker reads before it starts, exactly like a cancel
    that commits just after the send."""
    kind = kind_for(job_type)
    try:
        fields = kind.message_fields(job_id, attempt, row=row)
    except JobUnavailable as exc:
        with transaction.atomic():
            job = kind.lock(job_id, attempt=attempt)
            if job is not None and not job.finished:
                job_finish(kind, job, outcome=Outcome.FAILED, code=exc.code)
        return None
    if fields is None:
        return None
    message_id = dispatch.job_send(fields=fields, job_id=job_id, attempt=attempt, delay_seconds=delay_seconds)
    kind.sent(job_id, attempt, message_id)
    first_check = delay_seconds + min(kind.stuck_after(), kind.max_wait()).total_seconds()
    _watchdog_send(kind, job_id=job_id, attempt=attempt, delay_seconds=first_check + 1)
    return message_id


def _watchdog_send(kind: JobKind, *, job_id: str, attempt: int, delay_seconds: float) -> None:
    actor = dramatiq.get_broker().get_actor(WATCHDOG_ACTOR)
    actor.send_with_options(args=(kind.job_type, job_id, attempt), delay=int(delay_seconds * 1000))


# --- Ends ---------------------------------------------------------------------------------------


def job_finish(
    kind: JobKind, job: Job, *, outcome: Outcome, code: str, message: str = "", retryable: bool = False
) -> None:
    """Ends a job that did not succeed (rows locked): the kind writes the state, the hold is released,
    the worker is told to stop, and a failure is pushed (a cancel is the user's own doing: no push)."""
    kind.end(
        job, outcome=outcome, code=code, message=message or kind.failure_message(code), retryable=retryable
    )
    job.finished = True
    if job.hold_owner is not None:
        credits_release(owner=job.hold_owner)
    job_id = job.job_id
    transaction.on_commit(lambda: dispatch.cancel_flag_set(job_id), robust=True)
    if outcome == Outcome.FAILED:
        kind.notify(job, succeeded=False)


def job_retry_or_fail(kind: JobKind, job: Job, *, code: str, message: str = "") -> None:
    """A retryable failure: a new attempt if the kind has one (sent after the commit), else FAILED."""
    message = message or kind.failure_message(code)
    delay = kind.retry(job, code=code, message=message)
    if delay is None:
        job_finish(kind, job, outcome=Outcome.FAILED, code=code, message=message, retryable=True)
        return
    job_dispatch_on_commit(kind, job_id=job.job_id, attempt=job.attempt, delay_seconds=delay)


def _job_succeed(kind: JobKind, job: Job, event: JobEvent) -> None:
    if not kind.outputs_valid(job, event):
        logger.error(
            "%s %s: a completed event with unusable outputs: %r", kind.job_type, job.job_id, event.outputs
        )
        job_finish(kind, job, outcome=Outcome.FAILED, code=INTERNAL)
        return
    if kind.review_needed(job, event):  # flagged by moderation: not delivered, not charged, for staff
        if job.hold_owner is not None:
            credits_release(owner=job.hold_owner)
        kind.hold_for_review(job, event)
        job.finished = True
        return
    charged = credits_capture(owner=job.hold_owner) if job.hold_owner is not None else False
    kind.succeed(job, event, charged=charged)
    job.finished = True
    if event.attempt != job.attempt:  # an earlier attempt finished after all: stop the newer one
        job_id = job.job_id
        transaction.on_commit(lambda: dispatch.cancel_flag_set(job_id), robust=True)
    kind.notify(job, succeeded=True)


# --- Events from the GPU workers ----------------------------------------------------------------


def _stale(kind: JobKind, job: Job, event: JobEvent) -> bool:
    if event.sequence <= job.last_sequence or event.attempt > job.attempt:
        return True
    if event.attempt < job.attempt:
        return not (kind.late_completion_wins and event.kind == "completed")
    return False


def job_event_apply(*, message: dict) -> str:
    """Applies one JobEvent message (the job-events actor). Returns what it did: `applied`, `stale` (a
    sequence already seen, or an earlier attempt's event), `final` (the job had finished: nothing
    changes) or `gone` (no such job). A message that breaks the contract raises ContractError.

    Progress is best-effort; completed and failed are applied exactly once, with the rows locked."""
    event = JobEvent.from_message(message)
    kind = kind_for(event.job_type)
    with transaction.atomic():
        job = kind.lock(event.job_id)
        if job is None:
            kind.gone(event)
            return "gone"
        if job.finished:
            kind.final(job, event)
            return "final"
        if _stale(kind, job, event):
            return "stale"
        kind.seen(job, event)
        if event.kind == "completed":
            _job_succeed(kind, job, event)
        elif event.kind == "failed":
            code = event.reason_code or INTERNAL
            text = kind.failure_message(code, event.message)
            if code == CANCELED:
                job_finish(kind, job, outcome=Outcome.CANCELED, code=code)
            elif event.retryable and event.attempt == job.attempt:
                job_retry_or_fail(kind, job, code=code, message=text)
            else:
                job_finish(kind, job, outcome=Outcome.FAILED, code=code, message=text)
        else:
            kind.progress(job, event)
    return "applied"


# --- Watchdog and reaper ------------------------------------------------------------------------


def job_watchdog(*, job_type: str, job_id: str, attempt: int, now: dt.datetime | None = None) -> float | None:
    """Checks one attempt: a running one silent for the kind's `stuck_after` lost its worker (WORKER_LOST,
    retried like any retryable failure); a waiting one older than `max_wait` expires (EXPIRED, released).
    Returns the seconds until the next check, or None when there is nothing more to watch."""
    kind = kind_for(job_type)
    now = now or timezone.now()
    stuck_after, max_wait = kind.stuck_after(), kind.max_wait()
    with transaction.atomic():
        job = kind.lock(job_id, attempt=attempt)
        if job is None or job.finished:
            return None
        waited = now - job.since
        if job.running:
            if waited >= stuck_after:
                job_retry_or_fail(kind, job, code=WORKER_LOST)
                return None
            return (stuck_after - waited).total_seconds()
        if waited >= max_wait:
            job_finish(kind, job, outcome=Outcome.FAILED, code=EXPIRED)
            return None
        return max(min((max_wait - waited).total_seconds(), stuck_after.total_seconds()), 1.0)


def job_watchdog_again(*, job_type: str, job_id: str, attempt: int, delay_seconds: float) -> None:
    _watchdog_send(kind_for(job_type), job_id=job_id, attempt=attempt, delay_seconds=delay_seconds + 0.5)


def jobs_reap(*, now: dt.datetime | None = None) -> int:
    """One sweep over every kind's jobs that the watchdogs might have missed (ops, or after an outage):
    silent running ones, expired waiting ones, and waiting ones whose message never reached the broker.
    Returns how many it changed or re-sent."""
    now = now or timezone.now()
    changed = 0
    for kind in registered_kinds():
        candidates = kind.candidates(
            stuck_before=now - kind.stuck_after(), queued_before=now - kind.max_wait()
        )
        for job_id, attempt in candidates.values_list(kind.job_id_field, "attempt"):
            if job_watchdog(job_type=kind.job_type, job_id=str(job_id), attempt=attempt, now=now) is None:
                changed += 1
        for job_id, attempt in kind.unsent(queued_before=now - UNSENT_AFTER).values_list(
            kind.job_id_field, "attempt"
        ):
            job_dispatch(job_type=kind.job_type, job_id=str(job_id), attempt=attempt)
            changed += 1
    return changed
