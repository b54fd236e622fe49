"""Writes: curating trends (publish, schedule, retire, pin), engagement counters, favorites.

Every change a curator or the rotation job makes to a trend's life cycle is recorded as a `TrendChange`,
and the shared home screen is invalidated after the transaction commits.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.actors import actor_send
from apps.core.errors import NotFound, ValidationFailed
from apps.storage.backends import get_storage

from .cache import screen_cache_invalidate_on_commit
from .media import media_exists
from .models import ChangeAction, Requirement, Trend, TrendChange, TrendFavorite, TrendStat, TrendStatus
from .prompts import template_problems

# --- Curating --------------------------------------------------------------------------------------


# Which model routes exist is the generations app's to say, and that app sits above this one (it makes
# videos from trends), so it hands its reader over from its AppConfig.ready instead of being imported.
_model_route_names: Callable[[], set[str]] | None = None


def model_route_names_source_set(source: Callable[[], set[str]]) -> None:
    global _model_route_names
    _model_route_names = source


# Whether a video being made still reads a stored sound is the generations app's to say too (a generation
# keeps the sound key it was created with): handed over the same way.
_sound_in_use: Callable[[str], bool] | None = None

SOUND_DELETE_ACTOR = "trends_sound_delete"  # tasks.py

# And which clip lengths a route renders: (the durations it cannot, its longest clip in seconds).
_durations_beyond: Callable[[str, list[int]], tuple[list[int], float]] | None = None


def route_durations_source_set(source: Callable[[str, list[int]], tuple[list[int], float]]) -> None:
    global _durations_beyond
    _durations_beyond = source


def sound_in_use_source_set(source: Callable[[str], bool]) -> None:
    global _sound_in_use
    _sound_in_use = source


def trend_sounds_release_on_commit(keys: Iterable[str]) -> None:
    """After the commit, has each of these stored sounds (a trend's normalized AAC, the only file kept of
    an upload) deleted once nothing uses it any more (`trend_sound_delete_unused`)."""
    for key in sorted({key for key in keys if key}):
        transaction.on_commit(functools.partial(actor_send, SOUND_DELETE_ACTOR, key))


def trend_sound_delete_unused(*, key: str) -> str:
    """Deletes a stored trend sound that no trend uses: "deleted"; "used" when a trend still does (a demo
    sound several trends share, or one set back) and it stays; "busy" when a video being made still
    reads it (try again later: such a video finishes or expires within GENERATIONS_QUEUE_MAX_WAIT)."""
    if Trend.objects.filter(sound_key=key).exists():
        return "used"
    if _sound_in_use is None:
        raise ImproperlyConfigured("no app told apps.trends which sounds videos read (apps.generations does)")
    if _sound_in_use(key):
        return "busy"
    get_storage().delete(key)
    return "deleted"


def known_model_routes() -> set[str]:
    """Model routes a trend may prefer (the generations app's ModelRoute names)."""
    if _model_route_names is None:
        raise ImproperlyConfigured("no app told apps.trends which model routes exist (apps.generations does)")
    return _model_route_names()


def trend_publish_problems(*, trend: Trend) -> list[str]:
    """Why this trend cannot go live, in words a curator can act on; empty when it can."""
    problems = template_problems(trend.prompt_template, needs_subject=trend.requires != Requirement.NONE)
    if not trend.cover_image_key:
        problems.append("The cover image is missing: upload one.")
    elif not media_exists(trend.cover_image_key):
        problems.append(f"The cover image {trend.cover_image_key} is not in storage: upload it again.")
    elif not (trend.cover_width and trend.cover_height):
        problems.append("The cover image has no size: upload it again so its width and height are read.")
    if trend.preview_video_key and not media_exists(trend.preview_video_key):
        problems.append(f"The preview video {trend.preview_video_key} is not in storage: upload it again.")
    if trend.preferred_model_route not in known_model_routes():
        problems.append(
            f"The model route {trend.preferred_model_route!r} is unknown; choose one of "
            + ", ".join(sorted(known_model_routes()))
            + "."
        )
    elif _durations_beyond is not None and isinstance(trend.durations, list):
        beyond, longest = _durations_beyond(trend.preferred_model_route, list(trend.durations))
        if beyond:
            problems.append(
                f"The model route {trend.preferred_model_route} renders clips up to {longest:g} s (what its "
                f"model was trained on): remove {' and '.join(f'{s} s' for s in beyond)} from the durations, "
                "or choose a route that renders them."
            )
    return problems


def _record(*, trend: Trend, action: str, reason: str, actor: str, **details) -> TrendChange:
    return TrendChange.objects.create(
        trend=trend, trend_slug=trend.slug, action=action, reason=reason, actor=actor, details=details
    )


def _full_clean(trend: Trend) -> None:
    try:
        trend.full_clean()
    except DjangoValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise ValidationFailed(" ".join(messages), field=field) from None


def _check_publishable(trend: Trend) -> None:
    problems = trend_publish_problems(trend=trend)
    if problems:
        raise ValidationFailed(f"{trend.title} cannot be published: " + " ".join(problems), field="status")


@transaction.atomic
def trend_save(*, trend: Trend, actor: str) -> Trend:
    """Creates or updates a trend as a curator edited it. Going live or scheduled must pass the checks."""
    now = timezone.now()
    previous = None
    if not trend._state.adding:
        previous = Trend.objects.select_for_update().filter(pk=trend.pk).values_list("status", "sound_key")
    previous_status, previous_sound = (previous.first() if previous is not None else None) or (None, "")
    _full_clean(trend)
    if trend.status in (TrendStatus.LIVE, TrendStatus.SCHEDULED):
        _check_publishable(trend)
    if trend.status == TrendStatus.LIVE and previous_status != TrendStatus.LIVE:
        trend.published_at = now
        trend.retired_at = None
        trend.below_threshold_since = None
    if trend.status == TrendStatus.RETIRED and previous_status != TrendStatus.RETIRED:
        trend.retired_at = now
    trend.save()
    if previous_sound and previous_sound != trend.sound_key:  # replaced or removed: its file goes
        trend_sounds_release_on_commit([previous_sound])
    if trend.status != previous_status:
        action = {
            TrendStatus.LIVE: ChangeAction.PUBLISHED,
            TrendStatus.SCHEDULED: ChangeAction.SCHEDULED,
            TrendStatus.RETIRED: ChangeAction.RETIRED,
            TrendStatus.DRAFT: ChangeAction.UNPUBLISHED,
        }[TrendStatus(trend.status)]
        if previous_status is not None or trend.status != TrendStatus.DRAFT:
            reason = "Edited in admin."
            if trend.status == TrendStatus.SCHEDULED:
                reason = f"Scheduled to go live at {trend.publish_at.isoformat()}."
            _record(trend=trend, action=action, reason=reason, actor=actor, previous_status=previous_status)
    screen_cache_invalidate_on_commit()
    return trend


@transaction.atomic
def trend_publish(*, trend: Trend, actor: str) -> bool:
    """Puts a trend live now. False when it already was; ValidationFailed when it cannot be."""
    trend = Trend.objects.select_for_update().get(pk=trend.pk)
    if trend.status == TrendStatus.LIVE:
        return False
    _check_publishable(trend)
    now = timezone.now()
    previous = trend.status
    Trend.objects.filter(pk=trend.pk).update(
        status=TrendStatus.LIVE, published_at=now, retired_at=None, below_threshold_since=None, updated_at=now
    )
    _record(
        trend=trend,
        action=ChangeAction.PUBLISHED,
        reason="Published by a curator.",
        actor=actor,
        previous_status=previous,
    )
    screen_cache_invalidate_on_commit()
    return True


@transaction.atomic
def trend_retire(*, trend: Trend, actor: str, reason: str = "Retired by a curator.") -> bool:
    """Takes a trend off the app. False when it was already retired."""
    now = timezone.now()
    changed = (
        Trend.objects.filter(pk=trend.pk)
        .exclude(status=TrendStatus.RETIRED)
        .update(status=TrendStatus.RETIRED, retired_at=now, updated_at=now)
    )
    if changed:
        _record(
            trend=trend, action=ChangeAction.RETIRED, reason=reason, actor=actor, previous_status=trend.status
        )
        screen_cache_invalidate_on_commit()
    return bool(changed)


@transaction.atomic
def trend_set_pinned(*, trend: Trend, pinned: bool, actor: str) -> bool:
    changed = Trend.objects.filter(pk=trend.pk, pinned=not pinned).update(
        pinned=pinned, updated_at=timezone.now()
    )
    if changed:
        action = ChangeAction.PINNED if pinned else ChangeAction.UNPINNED
        _record(trend=trend, action=action, reason="Changed by a curator.", actor=actor)
        screen_cache_invalidate_on_commit()
    return bool(changed)


def feed_changed() -> None:
    """Sections, their items, categories or section support changed: rebuild the shared screen."""
    screen_cache_invalidate_on_commit()


# --- Engagement ------------------------------------------------------------------------------------

COUNTERS = ("impressions", "opens", "generations_started", "generations_succeeded", "shares", "favorites")


def current_hour(now: float | None = None) -> int:
    return int((now if now is not None else time.time()) // 3600)


def _count(counts: dict, *, counter: str, hour: int | None = None) -> None:
    """Adds `counts` ({trend_id: n}) to `counter`: lifetime totals and this hour's bucket, atomically.

    Rows are locked in primary-key order first, so concurrent batches touching the same trends queue up
    instead of deadlocking; `F()` and the upsert add to the committed value, so no increment is lost.
    """
    if not counts:
        return
    assert counter in COUNTERS
    hour = current_hour() if hour is None else hour
    ids = sorted(counts)
    list(Trend.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
    by_amount: dict[int, list] = {}
    for trend_id in ids:
        by_amount.setdefault(counts[trend_id], []).append(trend_id)
    for amount, trend_ids in by_amount.items():
        Trend.objects.filter(pk__in=trend_ids).update(**{counter: F(counter) + amount})
    stats_add({trend_id: {counter: counts[trend_id]} for trend_id in ids}, hour=hour)


def stats_add(rows: dict, *, hour: int) -> None:
    """Adds counts to hourly buckets: {trend_id: {counter: n}}. One INSERT ... ON CONFLICT DO UPDATE."""
    if not rows:
        return
    table = TrendStat._meta.db_table
    pk_field = Trend._meta.pk
    columns = ", ".join(COUNTERS)
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTERS)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * (2 + len(COUNTERS))) + ")"] * len(rows))
    params: list = []
    for trend_id in sorted(rows):
        values = rows[trend_id]
        params += [pk_field.get_db_prep_value(trend_id, connection), hour]
        params += [int(values.get(c, 0)) for c in COUNTERS]
    sql = (
        f"INSERT INTO {table} (trend_id, hour, {columns}) VALUES {placeholders} "  # noqa: S608 (names are ours)
        f"ON CONFLICT (trend_id, hour) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _live_ids_by_slug(slugs: Iterable[str]) -> dict[str, object]:
    return dict(Trend.objects.filter(status=TrendStatus.LIVE, slug__in=list(slugs)).values_list("slug", "pk"))


def trend_impressions_record(*, slugs: list[str]) -> tuple[int, int]:
    """Counts one impression per live trend in `slugs` (a batch from one screen). -> (recorded, ignored).

    Unknown, retired and repeated slugs are ignored, so a client retrying a batch cannot inflate a trend.
    """
    if len(slugs) > settings.TRENDS_IMPRESSIONS_MAX_BATCH:
        raise ValidationFailed(
            f"Send at most {settings.TRENDS_IMPRESSIONS_MAX_BATCH} impressions at a time.", field="slugs"
        )
    unique = list(dict.fromkeys(slug for slug in slugs if isinstance(slug, str) and slug))
    with transaction.atomic():
        ids = _live_ids_by_slug(unique)
        _count({trend_id: 1 for trend_id in ids.values()}, counter="impressions")
    return len(ids), len(slugs) - len(ids)


def _live_trend(slug: str) -> Trend:
    trend = Trend.objects.filter(status=TrendStatus.LIVE, slug=slug).select_related("category").first()
    if trend is None:
        raise NotFound("This trend is not available.", field="slug")
    return trend


def _counted(trend: Trend, counter: str) -> Trend:
    _count({trend.pk: 1}, counter=counter)
    trend.refresh_from_db(fields=[counter])
    return trend


@transaction.atomic
def trend_open_record(*, slug: str) -> Trend:
    return _counted(_live_trend(slug), "opens")


SHARE_CHANNEL_MAX = 32


@transaction.atomic
def trend_share_record(*, slug: str, channel: str | None = None) -> Trend:
    if channel is not None and (len(channel) > SHARE_CHANNEL_MAX or not channel.strip()):
        raise ValidationFailed(
            f"The channel is a short name, up to {SHARE_CHANNEL_MAX} characters.", field="channel"
        )
    return _counted(_live_trend(slug), "shares")


def trend_favorite(*, user, slug: str) -> Trend:
    """Favorites a live trend; doing it twice counts once."""
    with transaction.atomic():
        trend = _live_trend(slug)
        try:
            with transaction.atomic():
                TrendFavorite.objects.create(user=user, trend=trend)
        except IntegrityError:  # already a favorite (maybe from a concurrent request)
            return trend
        return _counted(trend, "favorites")


def trend_unfavorite(*, user, slug: str) -> Trend:
    """Removes a favorite (of any trend the user favorited, live or not); doing it twice changes nothing."""
    with transaction.atomic():
        trend = Trend.objects.filter(slug=slug).select_related("category").first()
        if trend is None:
            raise NotFound("This trend does not exist.", field="slug")
        deleted, _ = TrendFavorite.objects.filter(user=user, trend=trend).delete()
        if deleted:
            # Never below zero, even for favorites counted before the counter existed.
            Trend.objects.filter(pk=trend.pk, favorites__gt=0).update(favorites=F("favorites") - 1)
            stats_add({trend.pk: {"favorites": -1}}, hour=current_hour())
            trend.refresh_from_db(fields=["favorites"])
        return trend


def trend_generation_record(*, trend_id, succeeded: bool = False) -> None:
    """Called by the generations app: a generation from this trend started, or succeeded."""
    with transaction.atomic():
        _count({trend_id: 1}, counter="generations_succeeded" if succeeded else "generations_started")
