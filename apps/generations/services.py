"""Generations' writes, importable from one place. Each concern has its own module:

- requests.py   a request checked, quoted, created and held (idempotent per user and key);
- jobs.py       the generation kind of GPU job: the hooks the one job lifecycle (apps/jobs) runs on
                worker events, retries, fallbacks and ends;
- lifecycle.py  what users and staff ask of a generation: cancel, delete, share, a free retry;
- review.py     staff decisions on outputs that image moderation flagged: approve delivers, reject erases.
"""

from .jobs import FAILURE_MESSAGES, GENERATION_JOBS, generation_job
from .lifecycle import (
    generation_cancel,
    generation_delete,
    generation_retry_by_staff,
    generation_share_record,
)
from .requests import (
    GenerationRequest,
    Quote,
    generation_create,
    generation_finalize,
    generation_quote,
)
from .review import generation_review_approve, generation_review_reject

__all__ = [
    "FAILURE_MESSAGES",
    "GENERATION_JOBS",
    "GenerationRequest",
    "Quote",
    "generation_cancel",
    "generation_create",
    "generation_delete",
    "generation_finalize",
    "generation_job",
    "generation_quote",
    "generation_retry_by_staff",
    "generation_review_approve",
    "generation_review_reject",
    "generation_share_record",
]
