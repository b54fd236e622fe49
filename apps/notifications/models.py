"""One row per push notification per device: what was said, in which language, and how delivery went."""

from __future__ import annotations

from django.db import models

from apps.accounts.models import Device, Platform, User
from apps.core.fields import JSONField
from apps.core.models import BaseModel


class PushKind(models.TextChoices):
    GENERATION_SUCCEEDED = "GENERATION_SUCCEEDED", "Generation succeeded"
    GENERATION_FAILED = "GENERATION_FAILED", "Generation failed"
    CHARACTER_READY = "CHARACTER_READY", "Soul ID ready"
    CHARACTER_FAILED = "CHARACTER_FAILED", "Soul ID failed"


class PushStatus(models.TextChoices):
    QUEUED = "QUEUED", "Queued"  # waiting for its first attempt or for a retry (see next_attempt_at)
    SENDING = "SENDING", "Sending"  # claimed by a worker (claimed_at); a stale claim is taken over
    SENT = "SENT", "Sent"  # accepted by FCM (or logged by the console sender); final
    FAILED = "FAILED", "Failed"  # given up: a permanent error or retries exhausted; the token is kept; final
    DEAD = "DEAD", "Dead token"  # the token is gone (unregistered, or the device was removed); final


FINAL_STATUSES = frozenset({PushStatus.SENT, PushStatus.FAILED, PushStatus.DEAD})


class PushMessage(BaseModel):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="push_messages")
    # The token is read from the device at send time (an app may refresh it meanwhile); a device removed
    # before delivery leaves the row without one, and the message is DEAD.
    device = models.ForeignKey(Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    locale = models.CharField(max_length=35, help_text="The catalogue locale the text was rendered in.")
    kind = models.CharField(max_length=32, choices=PushKind.choices)
    title = models.CharField(max_length=200)
    body = models.CharField(max_length=500)
    data = JSONField(default=dict, help_text="The data payload: ids and a deep link only.")
    collapse_key = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=PushStatus.choices, default=PushStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["status", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.get_platform_display()} ({self.get_status_display()})"
