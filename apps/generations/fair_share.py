"""Fair sharing of the GPU lanes between organizations and app users.

An organization's batch of 1,000 must not put 1,000 jobs in a lane ahead of every app user. So an
organization has a window (`Organization.max_active_generations`, in admin): at most that many of its
generations are in the lanes (sent, queued or running) at once. The rest wait in the database, held
(`share_held`), charged but unsent, and each one that ends sends the next of the same organization (oldest
first). An app user's job thus waits behind at most the sum of the windows of the organizations, never
behind a whole batch, and each organization gets its window's share of the lane whatever the others send.

Why a window and not a round-robin between owners inside the lane. A lane is a FIFO in the broker that GPU
workers (no Django) pop; reordering it per owner would mean keeping every job out of it and feeding it from
the database one slot at a time, for app users too. The window gives app users the same guarantee:

- Round-robin with a quantum of W. An organization's job that ends sends its next one to the *tail* of the
  lane, behind every job queued meanwhile, an app user's or another organization's. Once its first W are
  in, each organization with held work therefore takes its turn one job at a time among the owners with
  queued jobs, as round-robin does; W is how many turns it may have in flight.
- The bound. An app user's job (at most GENERATIONS_MAX_ACTIVE_PER_USER, 3, per user, never held) is sent
  at once and waits behind at most the sum of the windows of the organizations with jobs in its lane
  plus the app users' jobs already there, however large the batches are. Round-robin with a quantum of one
  would put at most one job per owner ahead of it; a window of 1 in admin gives exactly that.
- Choosing W. Windows summing to about the lane's GPU slots (GENERATIONS_GPU_CAPACITY) keep an app user's
  wait at one round of jobs; the default (20) favours an organization's batch throughput on a large pool.
  The ETA an app user is quoted counts the jobs in the lane only (held ones are not ahead of anyone).

Held generations are not counted ahead of anyone in queue positions and ETAs, are not "unsent" to the
reaper, and do not expire while held: their wait in the lane counts from their release.
"""

from __future__ import annotations

import functools
import logging

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

import gpu_worker.contract as contract
from apps.jobs.kinds import kind_for
from apps.jobs.lifecycle import job_dispatch_on_commit
from apps.organizations.selectors import organization_generation_cap

from .models import Generation, GenerationStatus

logger = logging.getLogger(__name__)

ACTIVE = (GenerationStatus.QUEUED, GenerationStatus.RUNNING)


def _in_lanes(owner_id) -> int:
    return Generation.objects.filter(
        owner_id=owner_id, status__in=ACTIVE, share_held=False, deleted_at__isnull=True
    ).count()


_READ = object()


def share_admits(*, owner_id, window: int | None | object = _READ) -> bool:
    """Whether a new generation of `owner_id` goes to its lane now (always for an app user). Called
    under the owner's row lock, like every create and release of that owner. `window`: the owner's
    `organization_generation_cap` when the caller has just read it (saves the query)."""
    if window is _READ:
        window = organization_generation_cap(account_id=owner_id)
    return window is None or _in_lanes(owner_id) < window


def share_release_on_commit(*, owner_id) -> None:
    """After the commit that ended one of an organization's generations, sends its next held ones."""
    transaction.on_commit(functools.partial(share_release, owner_id=owner_id), robust=True)


def share_release(*, owner_id) -> int:
    """Sends the oldest held generations of `owner_id` that fit in its window. Returns how many."""
    window = organization_generation_cap(account_id=owner_id)
    if window is None:
        return 0
    with transaction.atomic():
        # The owner's row lock: creates and releases of one owner take turns, so none is sent twice.
        list(get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk", flat=True))
        free = window - _in_lanes(owner_id)
        if free <= 0:
            return 0
        held = list(
            Generation.objects.filter(
                owner_id=owner_id, status=GenerationStatus.QUEUED, share_held=True, deleted_at__isnull=True
            )
            .order_by("queued_at", "id")
            .values_list("pk", "attempt")[:free]
        )
        now = timezone.now()
        kind = kind_for(contract.JOB_TYPE_GENERATION)
        for pk, attempt in held:
            Generation.objects.filter(pk=pk).update(share_held=False, queued_at=now, updated_at=now)
            job_dispatch_on_commit(kind, job_id=str(pk), attempt=attempt)
    if held:
        logger.info("released %s held generation(s) of account %s", len(held), owner_id)
    return len(held)
