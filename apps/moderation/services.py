"""Moderation's writes: the prompt check (refuses before anything is charged) and the audit record of a
decision. Image verdicts come from the GPU worker's classifier (gpu_worker/moderation.py); the thresholds
it applies are decided here (`image_thresholds`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.db import transaction

from apps.core.errors import ModerationRefused
from apps.core.table_cache import TableCache

from .models import BlockedTerm, Decision, ModerationDecision, Subject
from .normalize import prompt_forms, spelled_runs

logger = logging.getLogger(__name__)

PROMPT_REFUSED = "This prompt is not allowed by our content rules. Change it and try again."

# Every prompt is checked against the enabled terms: each process keeps them while the table's version
# holds (apps/core/table_cache.py), so a curator's new term refuses the next prompt in every process.
_enabled_terms = TableCache(
    BlockedTerm,
    lambda: tuple(
        BlockedTerm.objects.filter(enabled=True).only(
            "category", "locale", "normalized", "match_anywhere", "term"
        )
    ),
)


def _language(locale: str) -> str:
    return locale.replace("_", "-").split("-")[0].lower()


def prompt_matches(text: str, *, locales: Iterable[str] = ()) -> list[BlockedTerm]:
    """The enabled terms a text contains: terms for everyone, and those of the languages of `locales`
    (the user's devices); with no locale known, every locale's terms."""
    terms = _enabled_terms.get()
    # Every locale's terms first: the locales only ever drop matches, so a clean prompt (nearly all of
    # them) never reads them. Callers pass a lazy queryset of the devices' locales: a query saved.
    found = terms_in(text, terms)
    if not any(term.locale for term in found):
        return found
    return terms_in(text, found, locales=locales)


def terms_in(text: str, terms: Iterable[BlockedTerm], *, locales: Iterable[str] = ()) -> list[BlockedTerm]:
    """The terms among `terms` that a text contains (see `prompt_matches`); reads no database."""
    forms = prompt_forms(text)
    words = [f" {form} " for form in forms]
    joined = [form.replace(" ", "") for form in forms]
    spelled = spelled_runs(text)
    languages = {_language(locale) for locale in locales if locale}
    found = []
    for term in terms:
        if term.locale and languages and _language(term.locale) not in languages:
            continue
        needle = term.normalized
        compact = needle.replace(" ", "")
        if (
            any(f" {needle} " in form for form in words)
            or any(compact in run for run in spelled)
            or (term.match_anywhere and any(compact in form for form in joined))
        ):
            found.append(term)
    return found


def prompt_check(
    *, user, text: str, locales: Iterable[str] = (), field: str = "prompt", object_ref: str = ""
) -> None:
    """Refuses a prompt with a listed term (MODERATION, a message that repeats nothing of it), audited.
    Call it before anything is held."""
    if not text or not text.strip():
        return
    matches = prompt_matches(text, locales=locales)
    if not matches:
        return
    categories = sorted({term.category for term in matches})
    decision_record(
        subject=Subject.PROMPT,
        decision=Decision.REFUSED,
        user=user,
        object_ref=object_ref,
        categories=categories,
        detail=("terms: " + ", ".join(sorted({term.normalized for term in matches})))[:300],
    )
    raise ModerationRefused(PROMPT_REFUSED, field=field, categories=categories)


def decision_record(
    *,
    subject: str,
    decision: str,
    user=None,
    decided_by=None,
    object_ref: str = "",
    categories: Iterable[str] = (),
    scores: Mapping[str, float] | None = None,
    detail: str = "",
) -> ModerationDecision:
    """Appends one decision to the audit (in its own savepoint: a refusal that follows keeps it)."""
    with transaction.atomic():
        record = ModerationDecision(
            subject=subject,
            decision=decision,
            user=user if user is not None and getattr(user, "pk", None) else None,
            decided_by=decided_by,
            object_ref=str(object_ref or ""),
            categories=list(categories),
            scores={str(k): round(float(v), 4) for k, v in (scores or {}).items()},
            detail=detail[:300],
        )
        record.full_clean(exclude=["user", "decided_by"])
        record.save(force_insert=True)
    return record


def image_thresholds(*, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The score at or above which each classifier category flags an image: MODERATION_IMAGE_THRESHOLDS,
    made stricter (never looser) by a trend's overrides."""
    thresholds = {str(k): float(v) for k, v in settings.MODERATION_IMAGE_THRESHOLDS.items()}
    for category, value in (overrides or {}).items():
        value = float(value)
        thresholds[category] = min(thresholds.get(category, value), value)
    return thresholds


def image_moderation_model() -> str:
    """The classifier's folder under MODEL_ROOT, or "" when image moderation is off."""
    if settings.MODERATION_IMAGES_DISABLED:
        return ""
    return settings.MODERATION_IMAGE_MODEL
