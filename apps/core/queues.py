"""Dramatiq queue names used by the Django side. GPU lanes are defined in `gpu_worker/contract.py`.

Django workers are always started with `DJANGO_QUEUES` (never a bare `dramatiq` that would consume
every declared queue), so a Django process never takes a GPU job.
"""

from gpu_worker.contract import GPU_QUEUES, QUEUE_JOB_EVENTS

QUEUE_DEFAULT = "default"
QUEUE_PUSH = "push"
QUEUE_MAINTENANCE = "maintenance"
QUEUE_WEBHOOKS = "webhooks"  # apps/organizations: organizations' signed webhooks

DJANGO_QUEUES: tuple[str, ...] = (
    QUEUE_DEFAULT,
    QUEUE_PUSH,
    QUEUE_MAINTENANCE,
    QUEUE_JOB_EVENTS,
    QUEUE_WEBHOOKS,
)

assert not set(DJANGO_QUEUES) & set(GPU_QUEUES), "a Django queue must never be a GPU lane"
