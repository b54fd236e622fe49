"""Generations (a trend or a prompt + a selfie -> an MP4), the model routes that make them, and prices.

- `ModelRoute`: a named way to make a video (pipeline family, checkpoint folder under MODEL_ROOT, native
  size, fps, frames, steps, ...), with measured timings (for ETAs) and a fallback route. Staff edit it in
  admin; the GPU workers get the resolved route inside each job (gpu_worker.contract.RouteSpec).
- `PriceRule`: adjusts the price (the render's cost at the route's price per unit, at least the trend's
  price for the tier) for a route, a quality tier and a duration (apps/generations/pricing.py).
- `Generation`: one request of one user, from QUEUED to SUCCEEDED, FAILED or CANCELED.
"""

from __future__ import annotations

import re
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

import gpu_worker.contract as contract
from apps.core.choices import AspectRatio, Lane, QualityTier  # Lane: also re-exported from its old home
from apps.core.fields import JSONField
from apps.core.models import BaseModel
from apps.core.table_cache import VersionedQuerySet, versioned_table

from .shipped import SHIPPED_ROUTE_NAMES


class Device(models.TextChoices):
    CPU = "cpu", "CPU"
    CUDA = "cuda", "CUDA GPU"


class GenerationStatus(models.TextChoices):
    QUEUED = "QUEUED", "Queued"
    RUNNING = "RUNNING", "Running"
    SUCCEEDED = "SUCCEEDED", "Succeeded"
    FAILED = "FAILED", "Failed"
    CANCELED = "CANCELED", "Canceled"
    # The output was flagged by image moderation: not delivered, its hold released, waiting for staff
    # (GenerationReview). Approved: SUCCEEDED (free); rejected: FAILED with MODERATION.
    IN_REVIEW = "IN_REVIEW", "Being reviewed"


TERMINAL_STATUSES = frozenset(
    {GenerationStatus.SUCCEEDED, GenerationStatus.FAILED, GenerationStatus.CANCELED}
)


class GenerationStage(models.TextChoices):
    PLANNING = "PLANNING", "Planning"
    LOADING_MODEL = contract.STAGE_LOADING_MODEL, "Loading the model"
    DENOISING = contract.STAGE_DENOISING, "Denoising"
    DECODING = contract.STAGE_DECODING, "Decoding"
    ENCODING = contract.STAGE_ENCODING, "Encoding"
    UPLOADING = contract.STAGE_UPLOADING, "Uploading"
    QUALITY_CHECK = contract.STAGE_QUALITY_CHECK, "Quality check"


# Failure codes: the worker's reason codes, and EXPIRED (never picked up by a GPU in time).
EXPIRED = "EXPIRED"
FAILURE_CODES = (*contract.REASON_CODES, EXPIRED)

# The API's aspect ratios in the contract's spelling.
CONTRACT_ASPECT_RATIOS = {
    AspectRatio.PORTRAIT_9_16: "9:16",
    AspectRatio.SQUARE_1_1: "1:1",
    AspectRatio.LANDSCAPE_16_9: "16:9",
}

ROUTE_NAME = RegexValidator(
    re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$"),
    "Lowercase letters, digits, dots, dashes and underscores, like wan2.2-ti2v-5b.",
)


def model_route_names() -> set[str]:
    """The names in the ModelRoute table (the shipped ones when it is empty, as in a test database that
    was flushed). apps.trends asks it through `known_model_routes` (registered in apps.py)."""
    return set(ModelRoute.objects.values_list("name", flat=True)) or set(SHIPPED_ROUTE_NAMES)


def _all_tiers() -> list[str]:
    return list(QualityTier.values)


def _all_lanes() -> list[str]:
    return list(Lane.values)


def validate_tiers(value) -> None:
    if not isinstance(value, list) or not value or any(item not in QualityTier.values for item in value):
        raise ValidationError(f"One or more of {', '.join(QualityTier.values)}.")


def validate_lanes(value) -> None:
    if not isinstance(value, list) or not value or any(item not in Lane.values for item in value):
        raise ValidationError(f"One or more of {', '.join(Lane.values)}.")


@versioned_table  # every create reads the routes from each process's copy (routing.py)
class ModelRoute(BaseModel):
    """A named way to make a video. What the GPU worker needs is `spec()`; the rest is for routing,
    pricing and ETAs. `seconds_per_step` and `overhead_seconds` start as estimates and follow the
    timings of completed jobs (an exponential moving average, normalised to the native size)."""

    name = models.CharField(max_length=64, unique=True, validators=[ROUTE_NAME])
    description = models.CharField(max_length=200, blank=True)
    family = models.CharField(
        max_length=32,
        choices=[(name, name) for name in contract.FAMILIES],
        help_text="The pipeline family in gpu_worker/pipelines.",
    )
    checkpoint = models.CharField(
        max_length=255,
        blank=True,
        help_text="The diffusers folder under the GPU workers' MODEL_ROOT (empty for tiny-wan).",
    )
    device = models.CharField(max_length=8, choices=Device.choices, default=Device.CUDA)
    width = models.PositiveIntegerField(help_text="Native width in pixels (landscape side for 16:9 routes).")
    height = models.PositiveIntegerField()
    fps = models.PositiveIntegerField()
    frames = models.PositiveIntegerField(help_text="Native frame count (family rule: multiple*k+1).")
    steps = models.PositiveIntegerField(help_text="Denoising steps.")
    guidance = models.FloatField(default=5.0, validators=[MinValueValidator(0.0)])
    image_conditioning = models.BooleanField(default=True, help_text="Takes a selfie as the first frame.")
    lora_support = models.BooleanField(default=True, help_text="Takes a Soul ID (a LoRA).")
    quality_tiers = JSONField(default=_all_tiers, validators=[validate_tiers])
    lanes = JSONField(default=_all_lanes, validators=[validate_lanes])
    cost_per_second = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=Decimal("0"),
        help_text="What one second of video costs to make, in US dollars (for reports and choices).",
    )
    cost_per_gpu_hour = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="What one hour of the GPU this route runs on costs, in US dollars (the cost per output "
        "minute report: GPU seconds of each job times this rate).",
    )
    credits_per_million_cost = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="The price of a render: credits per million units of cost, a unit being one denoising "
        "step over one latent token (steps x latent tokens of the clip at the tier's render profile). "
        "The trend's price for the tier is the minimum; price rules adjust the result "
        "(apps/generations/pricing.py). 0: the trend's price alone.",
    )
    seconds_per_step = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0)], help_text="Measured, at the native size."
    )
    overhead_seconds = models.FloatField(
        default=5.0,
        validators=[MinValueValidator(0.0)],
        help_text="Measured load, decode, encode, quality check and upload time.",
    )
    timing_samples = models.PositiveIntegerField(default=0, editable=False)
    speed_profile = JSONField(
        default=dict,
        blank=True,
        help_text="GPU speed-ups the worker applies (gpu_worker.contract.SpeedProfile): attention_backend, "
        'compile_blocks, cache ("first_block", "mag", "taylorseer") with cache_params, vae_tiling, tf32, '
        'vae_decode_dtype ("bfloat16": the decoder only, about 1.5x faster decode), cudnn_benchmark. '
        "Each is recorded in the job's timings. Empty: diffusers' defaults.",
    )
    scheduler = JSONField(
        default=dict,
        blank=True,
        help_text="Replaces the checkpoint's scheduler (gpu_worker.contract.check_scheduler), e.g. for a "
        'step-distilled checkpoint: {"class": "UniPCMultistepScheduler", "config": {"flow_shift": 3.0}}. '
        "The class is one of gpu_worker.contract.SCHEDULER_CLASSES; the config entries go on top of the "
        "checkpoint's. Empty: the checkpoint's own scheduler.",
    )
    lora_stacking = models.BooleanField(
        default=True,
        help_text="A Soul ID's LoRA may be stacked on this checkpoint (off for a distilled checkpoint "
        "that a LoRA trained on its base model would spoil).",
    )
    render_profiles = JSONField(
        default=dict,
        blank=True,
        help_text="How each quality tier renders (gpu_worker.contract.RenderProfile), by tier: "
        '{"DRAFT": {"width": 640, "height": 352, "fps": 24, "max_frames": 121, "steps": 20, "guidance": 5.0, '
        '"scheduler": {...}, "speed_profile": {...}, "refine_steps": 0, "refine_strength": 0.5, '
        '"watermark": true}, ...}. '
        "refine_steps: a second, low-noise pass of that many steps over the first pass's latents (Wan "
        "families; refine_strength: the share of the schedule it runs). DRAFT must cost less than STANDARD "
        "(all steps x latent tokens), CINEMA at least as much and without a step cache. A tier left out "
        "gets a default from the native settings (DRAFT: half the size and steps; CINEMA: 1.5x the steps, "
        "no cache). watermark: a visible mark (GENERATIONS_WATERMARK_TEXT) in a corner of the tier's videos; "
        "left out, DRAFT has it and the paid tiers do not.",
    )
    enabled = models.BooleanField(default=True)
    fallback = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="fallback_for",
        help_text="Tried after this route's retries fail for a reason that may pass elsewhere.",
    )

    objects = VersionedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def rules(self) -> contract.FamilyRules:
        return contract.FAMILIES[self.family]

    def profile(self, tier: str) -> contract.RenderProfile:
        """How this route renders `tier`: its stored render profile, else the default for the tier."""
        data = (self.render_profiles or {}).get(tier)
        if data is not None:
            return contract.RenderProfile.from_dict(data)
        return default_render_profile(self, tier)

    def spec(self, tier: str | None = None) -> contract.RouteSpec:
        """The route as the GPU contract describes it; with `tier`, rendered at that tier's profile."""
        spec = self._native_spec()
        return contract.route_for_tier(spec, self.profile(tier)) if tier else spec

    def _native_spec(self) -> contract.RouteSpec:
        return contract.RouteSpec(
            name=self.name,
            family=self.family,
            checkpoint=self.checkpoint,
            width=self.width,
            height=self.height,
            fps=self.fps,
            frames=self.frames,
            steps=self.steps,
            guidance=float(self.guidance),
            image_conditioning=self.image_conditioning,
            lora_support=self.lora_support,
            speed_profile=dict(self.speed_profile or {}),
            scheduler=dict(self.scheduler or {}),
            lora_stacking=self.lora_stacking,
        )

    @property
    def takes_lora(self) -> bool:
        """Whether a Soul ID's LoRA may run on this route (gpu_worker.contract.RouteSpec.takes_lora)."""
        return self.lora_support and self.lora_stacking

    def serves(self, *, quality: str, lane: str, needs_image: bool, needs_lora: bool) -> bool:
        return (
            quality in self.quality_tiers
            and lane in self.lanes
            and (self.image_conditioning or not needs_image)
            and (self.takes_lora or not needs_lora)
        )

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.family in contract.FAMILIES:
            rules = self.rules
            if self.width and self.width % rules.size_multiple:
                errors["width"] = f"A multiple of {rules.size_multiple} for {self.family}."
            if self.height and self.height % rules.size_multiple:
                errors["height"] = f"A multiple of {rules.size_multiple} for {self.family}."
            if self.frames and (self.frames - 1) % rules.frame_multiple:
                errors["frames"] = (
                    f"{rules.frame_multiple}*k+1 for {self.family}, like {rules.frame_multiple * 5 + 1}."
                )
            if self.family == contract.FAMILY_TINY_WAN and self.checkpoint:
                errors["checkpoint"] = "tiny-wan is built from configs: leave the checkpoint empty."
            if self.family != contract.FAMILY_TINY_WAN and not self.checkpoint:
                errors["checkpoint"] = "Name the checkpoint folder under MODEL_ROOT."
        if self.checkpoint and (
            self.checkpoint.startswith("/") or ".." in self.checkpoint.split("/") or "\\" in self.checkpoint
        ):
            errors["checkpoint"] = "A folder inside MODEL_ROOT, like Wan2.2-TI2V-5B-Diffusers."
        try:
            contract.SpeedProfile.from_dict(self.speed_profile)
        except ValueError as exc:
            errors["speed_profile"] = str(exc)
        try:
            contract.check_scheduler(self.scheduler)
        except ValueError as exc:
            errors["scheduler"] = str(exc)
        if not errors and self.family in contract.FAMILIES and self.width and self.height and self.frames:
            problem = self._render_profiles_problem()
            if problem:
                errors["render_profiles"] = problem
        if self.fallback_id is not None:
            seen = {self.pk}
            route = self.fallback
            while route is not None:
                if route.pk in seen:
                    errors["fallback"] = "The fallback chain comes back to this route."
                    break
                seen.add(route.pk)
                route = route.fallback
        if errors:
            raise ValidationError(errors)

    def _render_profiles_problem(self) -> str:
        """What is wrong with the render profiles, or "" (admin's clean())."""
        data = self.render_profiles
        if not isinstance(data, dict):
            return "A mapping from tier (DRAFT, STANDARD, CINEMA) to a render profile."
        unknown = sorted(set(data) - set(contract.TIERS))
        if unknown:
            return (
                f"Unknown tiers: {', '.join(map(str, unknown))}; the tiers are {', '.join(contract.TIERS)}."
            )
        profiles = {}
        for tier in contract.TIERS:
            try:
                profile = self.profile(tier)
                profile.check_for(
                    self.family, native_width=self.width, native_height=self.height, native_frames=self.frames
                )
                contract.route_for_tier(self._native_spec(), profile)
            except ValueError as exc:  # ContractError included
                return f"{tier}: {exc}"
            profiles[tier] = profile
        cost = {tier: profile.unit_cost(self.family) for tier, profile in profiles.items()}
        if cost[contract.TIER_DRAFT] >= cost[contract.TIER_STANDARD]:
            return (
                f"DRAFT must cost less than STANDARD (steps x latent tokens per frame: "
                f"{cost[contract.TIER_DRAFT]} >= {cost[contract.TIER_STANDARD]}): "
                "make it smaller or use fewer steps."
            )
        if cost[contract.TIER_CINEMA] < cost[contract.TIER_STANDARD]:
            return "CINEMA must cost at least as much as STANDARD (more steps, no step cache)."
        cinema = contract.route_for_tier(self._native_spec(), profiles[contract.TIER_CINEMA])
        if cinema.speedups.cache is not None:
            return (
                "CINEMA renders without a step cache (a lossy speed-up): set its speed_profile without one."
            )
        return ""


def _snap(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


class CostReport(ModelRoute):
    """No table of its own: the admin's "Cost per output minute" page (apps/generations/admin.py) hangs off
    this proxy, so it is listed on the admin index and guarded by its own view permission."""

    class Meta:
        proxy = True
        verbose_name = "cost per output minute"
        verbose_name_plural = "cost per output minute"


def default_render_profile(route: ModelRoute, tier: str) -> contract.RenderProfile:
    """A tier's profile when the route names none: STANDARD is the native settings; DRAFT half the width,
    height and steps; CINEMA 1.5x the steps, without a step cache. The longest clip is the longest the
    worker accepts (contract.MAX_FRAME_FACTOR x the native frames)."""
    rules = contract.FAMILIES[route.family]
    fm = rules.frame_multiple
    max_frames = max(1, (int(route.frames * contract.MAX_FRAME_FACTOR) - 1) // fm) * fm + 1
    width, height, steps, speed_profile = route.width, route.height, route.steps, None
    if tier == contract.TIER_DRAFT:
        width, height = (
            _snap(route.width / 2, rules.size_multiple),
            _snap(route.height / 2, rules.size_multiple),
        )
        steps = max(1, (route.steps + 1) // 2)
    elif tier == contract.TIER_CINEMA:
        steps = -(-route.steps * 3 // 2)
        try:
            speedups = contract.SpeedProfile.from_dict(route.speed_profile)
        except ValueError:
            speedups = contract.SpeedProfile()
        if speedups.cache is not None:
            speed_profile = speedups.replace(cache=None).to_dict()
    return contract.RenderProfile(
        width=width,
        height=height,
        fps=route.fps,
        max_frames=max_frames,
        steps=steps,
        guidance=float(route.guidance),
        speed_profile=speed_profile,
    )


@versioned_table  # read from each process's copy (pricing.py)
class PriceRule(BaseModel):
    """An adjustment of the base price (the render's cost in credits, at least the trend's price) for a
    route, a quality tier and a duration. Empty matches any.

    For one generation the most specific enabled rule that matches applies (route counts most, then the
    tier, then the duration); no rule means the base price. See apps/generations/pricing.py.
    """

    route = models.ForeignKey(
        ModelRoute, on_delete=models.CASCADE, null=True, blank=True, related_name="price_rules"
    )
    quality = models.CharField(max_length=16, choices=QualityTier.choices, blank=True)
    duration_seconds = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(60)]
    )
    multiplier = models.DecimalField(
        max_digits=6,
        decimal_places=3,
        default=Decimal("1.000"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text="The base price is multiplied by this (rounded half up)...",
    )
    add_credits = models.IntegerField(default=0, help_text="...then this is added (may be negative).")
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True)

    objects = VersionedQuerySet.as_manager()

    class Meta:
        ordering = ["route__name", "quality", "duration_seconds"]

    def __str__(self) -> str:
        parts = [self.route.name if self.route_id else "any route", self.quality or "any tier"]
        parts.append(f"{self.duration_seconds} s" if self.duration_seconds else "any duration")
        return " / ".join(parts)

    @property
    def specificity(self) -> int:
        return 4 * (self.route_id is not None) + 2 * bool(self.quality) + (self.duration_seconds is not None)

    def clean(self) -> None:
        if not self.enabled:
            return
        clash = PriceRule.objects.filter(
            enabled=True, route=self.route, quality=self.quality, duration_seconds=self.duration_seconds
        ).exclude(pk=self.pk)
        if clash.exists():
            raise ValidationError(
                "An enabled rule for the same route, tier and duration exists: edit that one."
            )


class Generation(BaseModel):
    """One video request. Status moves QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELED; a retry or a
    fallback puts it back in QUEUED with a higher `attempt`. Terminal states are final. A flagged output
    goes RUNNING -> IN_REVIEW -> SUCCEEDED | FAILED by a staff decision (GenerationReview).

    `last_worker_sequence` is the highest JobEvent.sequence handled (the worker numbers from the run's
    start time in microseconds: 64-bit). `api_sequence` numbers the changes subscribers see, one by one.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations")
    trend = models.ForeignKey(
        "trends.Trend", on_delete=models.SET_NULL, null=True, blank=True, related_name="generations"
    )
    trend_slug = models.CharField(max_length=80, blank=True)
    # What was asked
    prompt = models.TextField(blank=True)
    character_id = models.UUIDField(null=True, blank=True)
    photo_upload = models.ForeignKey(
        "storage.Upload", on_delete=models.SET_NULL, null=True, blank=True, related_name="generations"
    )
    image_key = models.CharField(max_length=255, blank=True, help_text="The verified selfie's storage key.")
    lora_key = models.CharField(max_length=255, blank=True)
    sound_key = models.CharField(
        max_length=512, blank=True, help_text="The trend's sound muxed into the video; empty: silent."
    )
    aspect_ratio = models.CharField(max_length=16, choices=AspectRatio.choices)
    duration_seconds = models.PositiveSmallIntegerField()
    quality = models.CharField(max_length=16, choices=QualityTier.choices)
    lane = models.CharField(max_length=16, choices=Lane.choices)
    seed = models.BigIntegerField(validators=[MinValueValidator(0)])
    seed_used = models.BigIntegerField(null=True, blank=True, help_text="The seed the worker used.")
    draft = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="finals",
        help_text="The DRAFT this generation renders again at a higher tier (finalizeGeneration).",
    )
    quoted_credits = models.PositiveIntegerField()
    plan = JSONField(default=dict)
    # How it is made
    route = models.ForeignKey(
        ModelRoute, on_delete=models.SET_NULL, null=True, blank=True, related_name="generations"
    )
    route_name = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    num_frames = models.PositiveIntegerField()
    fps = models.PositiveIntegerField(null=True, blank=True, help_text="The tier's frame rate on the route.")
    # Where it is
    status = models.CharField(
        max_length=16, choices=GenerationStatus.choices, default=GenerationStatus.QUEUED
    )
    stage = models.CharField(max_length=16, choices=GenerationStage.choices, blank=True)
    progress = models.FloatField(default=0.0)
    attempt = models.PositiveSmallIntegerField(default=1)
    route_attempts = models.PositiveSmallIntegerField(default=1, help_text="Attempts on the current route.")
    last_worker_sequence = models.BigIntegerField(default=0)
    api_sequence = models.BigIntegerField(default=0)
    job_message_id = models.CharField(max_length=64, blank=True)
    worker_outcome = models.CharField(
        max_length=32, blank=True, help_text="The last terminal report of a worker, even after a cancel."
    )
    failure_code = models.CharField(max_length=32, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    failure_retryable = models.BooleanField(default=False)
    credits_charged = models.PositiveIntegerField(default=0)
    # What came out
    video_key = models.CharField(max_length=255, blank=True)
    video_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    video_width = models.PositiveIntegerField(null=True, blank=True)
    video_height = models.PositiveIntegerField(null=True, blank=True)
    video_fps = models.PositiveIntegerField(null=True, blank=True)
    video_frames = models.PositiveIntegerField(null=True, blank=True)
    video_duration_seconds = models.FloatField(null=True, blank=True)
    poster_key = models.CharField(max_length=255, blank=True)
    poster_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    poster_width = models.PositiveIntegerField(null=True, blank=True)
    poster_height = models.PositiveIntegerField(null=True, blank=True)
    timings = JSONField(default=dict, blank=True)
    shares = models.PositiveIntegerField(default=0)
    # When
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # When the retention purge deleted its selfie (GENERATIONS_INPUT_RETENTION_DAYS): a draft cannot be
    # finalized without it.
    inputs_purged_at = models.DateTimeField(null=True, blank=True)
    # Idempotency: the same key and the same request give the same generation (kept with the row)
    # An organization's generation beyond its share of the lanes waits here, unsent (fair_share.py).
    share_held = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"], name="generation_idempotency_key_once"
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0.0) & Q(progress__lte=1.0), name="generation_progress_0_1"
            ),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "lane", "queued_at"]),
            models.Index(fields=["status", "last_event_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.trend_slug or 'prompt'} for {self.owner_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def has_sound(self) -> bool:
        """Whether the video carries a sound: the trend's was asked for (the worker's quality gate refuses
        a video without it, so a delivered one has it)."""
        return bool(self.sound_key)

    @property
    def output_prefix(self) -> str:
        """Where the current attempt writes: generations/<owner>/<generation>/a<attempt>."""
        return f"{generation_prefix(self)}a{self.attempt}"


class ReviewStatus(models.TextChoices):
    PENDING = "PENDING", "Waiting for review"
    APPROVED = "APPROVED", "Approved: delivered"
    REJECTED = "REJECTED", "Rejected: erased"
    WITHDRAWN = "WITHDRAWN", "Withdrawn: the user deleted the generation"


class GenerationReview(BaseModel):
    """A generation whose output image moderation flagged: the outputs the worker uploaded (kept from the
    user until a decision), the classifier's verdict, and the staff decision (also audited in
    apps/moderation's ModerationDecision)."""

    generation = models.OneToOneField(Generation, on_delete=models.CASCADE, related_name="review")
    status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PENDING, db_index=True
    )
    outputs = JSONField(default=dict, help_text="The completed event's outputs, held back.")
    timings = JSONField(default=dict)
    categories = JSONField(default=list)
    scores = JSONField(default=dict)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"review of {self.generation_id} ({self.status})"


def generation_prefix(generation: Generation) -> str:
    """Every stored object of a generation lives under this prefix."""
    return f"generations/{generation.owner_id}/{generation.id}/"


def user_generations_prefix(user_id) -> str:
    return f"generations/{user_id}/"


class RetentionKind(models.TextChoices):
    INPUT = "INPUT"  # a selfie upload (GENERATIONS_INPUT_RETENTION_DAYS)
    OUTPUT = "OUTPUT"  # a generation's video and poster (GENERATIONS_OUTPUT_RETENTION_DAYS)


class RetentionRecord(BaseModel):
    """The audit of one deletion by the retention purge (retention.py): what was deleted, whose, and
    which storage keys. Plain references, so the record outlives the rows it names (but not an account's
    erasure, which removes everything of the user)."""

    kind = models.CharField(max_length=8, choices=RetentionKind.choices)
    user_ref = models.UUIDField()
    upload_ref = models.UUIDField(null=True, blank=True)
    generation_refs = JSONField(default=list, blank=True)
    keys = JSONField(default=list, blank=True)  # storage keys removed
    term_days = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["user_ref", "created_at"])]

    def __str__(self) -> str:
        return (
            f"retention {self.kind} of {self.upload_ref or self.generation_refs} ({self.created_at:%Y-%m-%d})"
        )
