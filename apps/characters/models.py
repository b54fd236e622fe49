"""Soul IDs: a user's identity (Character), the consent it was made under, its selfies, and erasures.

Biometric data (photos, face crops, face hashes, LoRA weights, thumbnails) lives only in rows of this app
and in storage under `characters/<user uuid>/<character uuid>/` (see `character_prefix`). An erasure
removes all of it and leaves an ErasureRecord that names what was removed, never what it showed.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.core.fields import JSONField
from apps.core.models import BaseModel


class CharacterStatus(models.TextChoices):
    COLLECTING = "COLLECTING"  # taking photos (none yet, or every photo checked and the set can train)
    VALIDATING = "VALIDATING"  # at least one photo is being checked
    NEEDS_PHOTOS = "NEEDS_PHOTOS"  # every photo checked; too few (or too many) usable ones to train
    TRAINING = "TRAINING"
    READY = "READY"
    FAILED = "FAILED"
    DELETING = "DELETING"  # erasure requested: invisible to the API, gone once the erasure job ran


class PhotoStatus(models.TextChoices):
    PENDING = "PENDING"  # being checked
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"  # `reasons` says why
    DUPLICATE = "DUPLICATE"  # accepted alone, but a near-duplicate of an earlier photo of the set


def character_prefix(*, user_id, character_id) -> str:
    """The one storage prefix of everything stored for a Soul ID."""
    return f"characters/{user_id}/{character_id}/"


class Character(BaseModel):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="characters")
    name = models.CharField(max_length=60)
    status = models.CharField(
        max_length=16, choices=CharacterStatus.choices, default=CharacterStatus.COLLECTING
    )
    # Grows by one with every change the API can see (characterUpdated events carry it).
    sequence = models.PositiveIntegerField(default=1)
    training_step = models.PositiveIntegerField(default=0)
    training_total = models.PositiveIntegerField(default=0)
    training_progress = models.FloatField(default=0.0)  # 0..1
    training_eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    failure_message = models.CharField(max_length=255, blank=True)
    lora_key = models.CharField(max_length=255, blank=True)
    lora_metadata = JSONField(default=dict, blank=True)  # base model, route, version, rank, ...
    thumbnail_key = models.CharField(max_length=255, blank=True)
    thumbnail_width = models.PositiveIntegerField(default=0)
    thumbnail_height = models.PositiveIntegerField(default=0)
    thumbnail_bytes = models.PositiveIntegerField(default=0)
    trained_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)  # retention counts from here

    class Meta:
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(training_progress__gte=0) & Q(training_progress__lte=1),
                name="character_progress_0_1",
            ),
            models.CheckConstraint(
                condition=~Q(status=CharacterStatus.READY) | ~Q(lora_key=""), name="character_ready_has_lora"
            ),
        ]

    def __str__(self) -> str:
        return f"Soul ID {self.pk} ({self.status})"

    @property
    def prefix(self) -> str:
        return character_prefix(user_id=self.owner_id, character_id=self.pk)


class ConsentRecord(BaseModel):
    """The biometric consent a user gave for one Soul ID (BIPA / GDPR art. 9): which text, when, how, from
    where. Kept after the Soul ID is erased (it proves the consent; it holds no biometric data)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="biometric_consents"
    )
    character = models.ForeignKey(
        Character, on_delete=models.SET_NULL, null=True, blank=True, related_name="consents"
    )
    character_ref = models.UUIDField()  # the Soul ID's id, kept when the row is gone
    text_version = models.CharField(max_length=32)
    text_sha256 = models.CharField(max_length=64)
    purpose = models.CharField(max_length=255)
    retention_term = models.CharField(max_length=255)
    signature_method = models.CharField(max_length=64)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=255, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"consent {self.text_version} for {self.character_ref}"


class CharacterPhoto(BaseModel):
    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="photos")
    upload = models.OneToOneField(
        "storage.Upload", on_delete=models.SET_NULL, null=True, blank=True, related_name="character_photo"
    )
    upload_key = models.CharField(max_length=255, blank=True)  # the original's bytes, deleted once checked
    # The upload it was added from, kept once the upload is deleted: the app matches verdicts to files.
    upload_ref = models.UUIDField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=PhotoStatus.choices, default=PhotoStatus.PENDING)
    reasons = JSONField(default=list, blank=True)  # photo_checks.Reason codes
    duplicate_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    clean_key = models.CharField(max_length=255, blank=True)  # the upright photo, no metadata
    crop_key = models.CharField(max_length=255, blank=True)  # the face crop for training
    face_hash = models.CharField(max_length=16, blank=True)
    face_hash_mirrored = models.CharField(max_length=16, blank=True)
    measurements = JSONField(default=dict, blank=True)  # width, height, sharpness, ...
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["character", "created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status=PhotoStatus.ACCEPTED) | (~Q(clean_key="") & ~Q(crop_key="")),
                name="character_photo_accepted_has_outputs",
            ),
        ]

    def __str__(self) -> str:
        return f"photo {self.pk} ({self.status})"


class TrainingStatus(models.TextChoices):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class TrainingRun(BaseModel):
    """One training of a Soul ID on a GPU worker (gpu_worker.contract.TrainingJob): the credits held for
    it are owned by this row, so a retraining after a failure holds afresh."""

    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="training_runs")
    attempt = models.PositiveIntegerField()  # TrainingJob.attempt: 1, 2, ... per character
    status = models.CharField(max_length=16, choices=TrainingStatus.choices, default=TrainingStatus.RUNNING)
    route = models.CharField(max_length=64)
    credits = models.PositiveIntegerField()
    photo_count = models.PositiveIntegerField()
    last_event_sequence = models.BigIntegerField(default=0)  # the worker's event sequence (microseconds)
    job = JSONField(default=dict, blank=True)  # the TrainingJob message (gpu_worker.contract)
    job_message_id = models.CharField(max_length=64, blank=True)  # set once the message reached the broker
    started_at = models.DateTimeField(null=True, blank=True)  # the worker's first event
    last_event_at = models.DateTimeField(null=True, blank=True)  # the worker's last sign of life
    failure_code = models.CharField(max_length=32, blank=True)
    timings = JSONField(default=dict, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["character", "attempt"], name="training_run_attempt_unique"),
            models.UniqueConstraint(
                fields=["character"],
                condition=Q(status="RUNNING"),
                name="training_run_one_running",
            ),
        ]

    def __str__(self) -> str:
        return f"training {self.attempt} of {self.character_id} ({self.status})"


class ErasureStatus(models.TextChoices):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"  # some artifact could not be removed; the job retries


class ErasureRecord(BaseModel):
    """The audit of one erasure: what was removed, where, when, by which job, and each result. It names
    storage keys and row counts only, never biometric content."""

    user_ref = models.UUIDField()
    character_ref = models.UUIDField()
    trigger = models.CharField(max_length=32)  # USER_REQUEST, ACCOUNT_DELETION, RETENTION
    status = models.CharField(max_length=16, choices=ErasureStatus.choices, default=ErasureStatus.PENDING)
    job = models.CharField(max_length=64, blank=True)
    artifacts = JSONField(default=list, blank=True)  # [{kind, location, result, removed}]
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["character_ref"]), models.Index(fields=["user_ref"])]

    def __str__(self) -> str:
        return f"erasure of {self.character_ref} ({self.status})"
