"""Moderation's records: the term lists staff keep per category and locale, and the audit of every
decision (automatic or by staff) about a prompt, an input photo or an output."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from apps.core.fields import JSONField
from apps.core.models import BaseModel
from apps.core.table_cache import VersionedQuerySet, versioned_table

from .normalize import term_form


class Category(models.TextChoices):
    SEXUAL = "SEXUAL", "Sexual content"
    MINORS = "MINORS", "Minors in a sexual or harmful context"
    VIOLENCE = "VIOLENCE", "Violence and gore"
    HATE = "HATE", "Hate and harassment"
    SELF_HARM = "SELF_HARM", "Self-harm"
    PUBLIC_FIGURE = "PUBLIC_FIGURE", "Real public figures"
    OTHER = "OTHER", "Other store rules"


@versioned_table  # every prompt is checked against each process's copy (services.py)
class BlockedTerm(BaseModel):
    """A word or phrase that a prompt may not contain. Matched after folding (apps/moderation/normalize.py):
    case, accents, spacing, leetspeak and look-alike letters do not get around it."""

    category = models.CharField(max_length=32, choices=Category.choices)
    locale = models.CharField(
        max_length=16,
        blank=True,
        db_index=True,
        help_text="A language code (en, pt-BR, ja): the term is checked for users of that language. "
        "Empty: for everyone.",
    )
    term = models.CharField(max_length=120)
    normalized = models.CharField(max_length=240, editable=False, db_index=True)
    match_anywhere = models.BooleanField(
        default=False,
        help_text="Also inside longer words and across spaces (for terms that never occur innocently). "
        "Off: whole words only.",
    )
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True)

    objects = VersionedQuerySet.as_manager()

    class Meta:
        ordering = ("category", "locale", "normalized")
        constraints = [
            models.UniqueConstraint(fields=["category", "locale", "normalized"], name="moderation_term_once")
        ]

    def __str__(self) -> str:
        return f"{self.term} ({self.get_category_display()}, {self.locale or 'all'})"

    def clean(self) -> None:
        self.locale = self.locale.strip()
        self.normalized = term_form(self.term)
        if not self.normalized:
            raise ValidationError({"term": "Write a term with at least one letter or digit."})


class Subject(models.TextChoices):
    PROMPT = "PROMPT", "Prompt"
    INPUT_IMAGE = "INPUT_IMAGE", "Input photo"
    OUTPUT = "OUTPUT", "Output video"


class Decision(models.TextChoices):
    REFUSED = "REFUSED", "Refused automatically"
    FLAGGED = "FLAGGED", "Flagged for review"
    PASSED = "PASSED", "Passed"
    APPROVED = "APPROVED", "Approved by staff"
    REJECTED = "REJECTED", "Rejected by staff"


class ModerationDecision(BaseModel):
    """One decision, append-only: what was judged, the verdict, who made it (empty: the automatic check),
    when (`created_at`), and the scores and categories it rested on."""

    subject = models.CharField(max_length=16, choices=Subject.choices)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    object_ref = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="The generation it is about, if any."
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The staff member; empty for an automatic decision.",
    )
    categories = JSONField(default=list, blank=True)
    scores = JSONField(default=dict, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.get_subject_display()}: {self.get_decision_display()}"
