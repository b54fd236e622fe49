"""Training a Soul ID: the request that holds its price and hands a TrainingJob to the one job lifecycle.

Progress, READY or FAILED come back as GPU worker events, applied by the training kind's hooks
(apps/characters/jobs.py) under apps/jobs/lifecycle.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import gpu_worker.contract as contract
from apps.core.errors import NotEnoughPhotos, TooManyPhotos, UnsupportedOption, ValidationFailed
from apps.credits.services import credits_hold
from apps.jobs import dispatch
from apps.jobs.lifecycle import job_dispatch_on_commit

from .events import character_changed
from .jobs import TRAINING_JOBS
from .models import Character, CharacterStatus, PhotoStatus, TrainingRun
from .photos import EDITABLE
from .selectors import character_get_for_user

# The model routes live in apps.generations, above this app: it tells which route a name stands for
# (an enabled one, as a contract RouteSpec) from its AppConfig.ready.
_route_source: Callable[[str], contract.RouteSpec | None] | None = None


def training_route_source_set(source: Callable[[str], contract.RouteSpec | None]) -> None:
    global _route_source
    _route_source = source


def _training_route() -> contract.RouteSpec:
    route = _route_source(settings.CHARACTERS_TRAINING_ROUTE) if _route_source is not None else None
    if route is None or not route.takes_lora or route.family not in contract.TRAINABLE_FAMILIES:
        raise UnsupportedOption("Soul ID training is not available right now. Try again later.")
    return route


@transaction.atomic
def character_train(*, user, character_id) -> Character:
    """Starts training a Soul ID on its distinct accepted photos: holds the price, queues a TrainingJob."""
    character = character_get_for_user(user=user, character_id=character_id, for_update=True)
    if character.status == CharacterStatus.TRAINING:
        raise ValidationFailed("This Soul ID is already training.")
    if character.status == CharacterStatus.READY:
        raise ValidationFailed("This Soul ID is already trained. Add photos to train it again.")
    if character.status not in EDITABLE:
        raise ValidationFailed("This Soul ID cannot be trained now.")
    photos = list(character.photos.all())
    if any(photo.status == PhotoStatus.PENDING for photo in photos):
        raise ValidationFailed("Some photos are still being checked. Train once they are.")
    usable = [photo for photo in photos if photo.status == PhotoStatus.ACCEPTED]
    least, most = contract.TRAINING_MIN_PHOTOS, contract.TRAINING_MAX_PHOTOS
    if len(usable) < least:
        raise NotEnoughPhotos(required=least, accepted=len(usable))
    if len(usable) > most:
        raise TooManyPhotos(maximum=most, count=len(usable))
    route = _training_route()
    attempt = character.training_runs.count() + 1
    job = contract.TrainingJob(
        job_id=str(character.pk),
        route=route,
        photo_keys=tuple(photo.crop_key for photo in usable),
        output_prefix=f"{character.prefix}lora/{attempt}",
        seed=secrets.randbelow(contract.MAX_SEED + 1),
        attempt=attempt,
        **contract.training_defaults(route.family),
    )
    run = TrainingRun.objects.create(
        character=character,
        attempt=attempt,
        route=route.name,
        credits=settings.CHARACTERS_TRAINING_CREDITS,
        photo_count=len(usable),
        job=job.to_message(),
    )
    credits_hold(user=user, amount=run.credits, owner=run, reason="Soul ID training")
    character.status = CharacterStatus.TRAINING
    character.training_step = 0
    character.training_total = job.steps
    character.training_progress = 0.0
    character.training_eta_seconds = None
    character.failure_message = ""
    character.last_used_at = timezone.now()
    character_changed(character)
    job_id = str(character.pk)
    # An earlier training of this Soul ID may have been stopped: its flag must not stop this one.
    transaction.on_commit(lambda: dispatch.cancel_flag_clear(job_id), robust=True)
    job_dispatch_on_commit(TRAINING_JOBS, job_id=job_id, attempt=attempt)
    return character
