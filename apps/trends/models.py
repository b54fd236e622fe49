"""Trends (curated video presets), the server-driven home screen, engagement, and the rotation audit."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_slug
from django.db import models
from django.db.models import Q

from apps.accounts.models import Platform
from apps.core.choices import AspectRatio, QualityTier  # also re-exported from here, their old home
from apps.core.fields import JSONField
from apps.core.models import BaseModel

from .targeting import validate_app_version, validate_locales, validate_translations


class CameraMovement(models.TextChoices):
    STATIC = "static", "Static"
    DOLLY_IN = "dolly_in", "Dolly in"
    DOLLY_OUT = "dolly_out", "Dolly out"
    DRONE = "drone", "Drone"
    ORBIT = "orbit", "Orbit"
    ROLL_360 = "roll_360", "360 roll"
    FPV_ARC = "fpv_arc", "FPV arc"
    HANDHELD = "handheld", "Handheld"
    CRANE = "crane", "Crane"


class Requirement(models.TextChoices):
    NONE = "NONE", "Nothing"
    SELFIE = "SELFIE", "A selfie"
    SOUL_ID = "SOUL_ID", "A Soul ID"


class TrendStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    LIVE = "live", "Live"
    RETIRED = "retired", "Retired"


def validate_platforms(value: list) -> None:
    if not isinstance(value, list) or any(item not in Platform.values for item in value):
        raise ValidationError(f"A list of platforms out of {', '.join(Platform.values)} (empty: all).")


def validate_tags(value: list) -> None:
    if not isinstance(value, list):
        raise ValidationError("A list of tags.")
    for tag in value:
        if not isinstance(tag, str) or not tag or tag != tag.lower():
            raise ValidationError(f"{tag!r}: tags are lowercase slugs, like summer or slow-mo.")
        validate_slug(tag)


def validate_aspect_ratios(value: list) -> None:
    if not isinstance(value, list) or not value or any(item not in AspectRatio.values for item in value):
        raise ValidationError(f"One or more of {', '.join(AspectRatio.values)}.")


def validate_durations(value: list) -> None:
    if (
        not isinstance(value, list)
        or not value
        or any(not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= 60 for item in value)
    ):
        raise ValidationError("One or more durations in whole seconds, 1 to 60, like [5, 8].")


class Targeting(models.Model):
    """Who may see a trend or a section. Empty means everyone."""

    platforms = JSONField(default=list, blank=True, validators=[validate_platforms])
    min_app_version = models.CharField(
        max_length=32, blank=True, validators=[validate_app_version], help_text="Empty: every version."
    )
    locales = JSONField(
        default=list, blank=True, validators=[validate_locales], help_text='Like ["en", "pt-BR"]; empty: all.'
    )

    class Meta:
        abstract = True


class Category(BaseModel):
    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=80)
    titles = JSONField(
        default=dict, blank=True, validators=[validate_translations], help_text='Like {"es": "Baile"}.'
    )
    emoji = models.CharField(max_length=8, blank=True)
    sort_order = models.IntegerField(default=0)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["sort_order", "title"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.title


class Trend(Targeting, BaseModel):
    # What it is
    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=80)
    subtitle = models.CharField(max_length=160, blank=True)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="trends")
    tags = JSONField(default=list, blank=True, validators=[validate_tags])

    # Media: storage keys and sizes (URLs are made per request, see media.py)
    cover_image_key = models.CharField(max_length=512, blank=True)
    cover_width = models.PositiveIntegerField(null=True, blank=True)
    cover_height = models.PositiveIntegerField(null=True, blank=True)
    preview_video_key = models.CharField(max_length=512, blank=True)
    preview_width = models.PositiveIntegerField(null=True, blank=True)
    preview_height = models.PositiveIntegerField(null=True, blank=True)
    preview_duration_seconds = models.FloatField(null=True, blank=True)
    # The sound every video of the trend carries (apps/trends/sound.py): an AAC M4A in apps.storage,
    # normalized to TRENDS_SOUND_TARGET_LUFS; empty: the trend's videos are silent.
    sound_key = models.CharField(max_length=512, blank=True)
    sound_title = models.CharField(max_length=120, blank=True)
    sound_artist = models.CharField(max_length=120, blank=True)
    sound_licence = models.CharField(
        max_length=300, blank=True, help_text="Who licensed it and on what terms; shown in the app."
    )
    sound_duration_seconds = models.FloatField(null=True, blank=True, editable=False)
    sound_loudness_lufs = models.FloatField(null=True, blank=True, editable=False)

    # How it is made
    prompt_template = models.TextField(
        help_text="Text with named slots, like: {subject} dancing in the rain."
    )
    negative_prompt = models.TextField(blank=True)
    moderation_thresholds = JSONField(
        default=dict,
        blank=True,
        help_text='Stricter image moderation for this trend: {"category": score 0..1}, e.g. {"nsfw": 0.3}. '
        "Only lower than the settings' thresholds counts.",
    )
    camera_body = models.CharField(max_length=64, blank=True)
    lens = models.CharField(max_length=64, blank=True)
    focal_length_mm = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(8), MaxValueValidator(1200)]
    )
    aperture = models.DecimalField(
        max_digits=3,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0.7), MaxValueValidator(32)],
        help_text="f-number, like 1.8",
    )
    camera_movement = models.CharField(
        max_length=16, choices=CameraMovement.choices, default=CameraMovement.STATIC
    )
    movement_strength = models.FloatField(
        default=0.5, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)], help_text="0 to 1"
    )
    lighting = models.CharField(max_length=80, blank=True)
    mood = models.CharField(max_length=80, blank=True)
    aspect_ratios = JSONField(default=list, validators=[validate_aspect_ratios])
    default_aspect_ratio = models.CharField(
        max_length=16, choices=AspectRatio.choices, default=AspectRatio.PORTRAIT_9_16
    )
    durations = JSONField(default=list, validators=[validate_durations], help_text="Seconds, like [5, 8].")
    default_duration_seconds = models.PositiveSmallIntegerField(default=5)
    preferred_model_route = models.CharField(max_length=64)
    default_quality = models.CharField(
        max_length=16, choices=QualityTier.choices, default=QualityTier.STANDARD
    )
    price_draft = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    price_standard = models.PositiveIntegerField(default=4, validators=[MinValueValidator(1)])
    price_cinema = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    requires = models.CharField(max_length=16, choices=Requirement.choices, default=Requirement.SELFIE)

    # Life cycle and placement
    status = models.CharField(max_length=16, choices=TrendStatus.choices, default=TrendStatus.DRAFT)
    publish_at = models.DateTimeField(null=True, blank=True, help_text="When a scheduled trend goes live.")
    retire_at = models.DateTimeField(null=True, blank=True, help_text="When a live trend retires (optional).")
    published_at = models.DateTimeField(null=True, blank=True, editable=False)
    retired_at = models.DateTimeField(null=True, blank=True, editable=False)
    pinned = models.BooleanField(default=False, help_text="Pinned trends are never retired automatically.")
    sort_weight = models.IntegerField(default=0, help_text="Higher comes first among equals.")

    # Engagement (lifetime counters, updated atomically) and the decayed trending score
    impressions = models.PositiveBigIntegerField(default=0, editable=False)
    opens = models.PositiveBigIntegerField(default=0, editable=False)
    generations_started = models.PositiveBigIntegerField(default=0, editable=False)
    generations_succeeded = models.PositiveBigIntegerField(default=0, editable=False)
    shares = models.PositiveBigIntegerField(default=0, editable=False)
    favorites = models.PositiveBigIntegerField(default=0, editable=False)
    trending_score = models.FloatField(default=0.0, editable=False, db_index=True)
    score_updated_at = models.DateTimeField(null=True, blank=True, editable=False)
    below_threshold_since = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-pinned", "-sort_weight", "-trending_score", "slug"]
        indexes = [
            models.Index(fields=["status", "publish_at"]),
            models.Index(fields=["status", "retire_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="scheduled") | Q(publish_at__isnull=False),
                name="trend_scheduled_has_publish_at",
            )
        ]

    def __str__(self) -> str:
        return self.title

    def price_for(self, quality: str) -> int:
        return {
            QualityTier.DRAFT: self.price_draft,
            QualityTier.STANDARD: self.price_standard,
            QualityTier.CINEMA: self.price_cinema,
        }[QualityTier(quality)]

    @property
    def success_rate(self) -> float | None:
        if not self.generations_started:
            return None
        return self.generations_succeeded / self.generations_started

    @property
    def has_sound(self) -> bool:
        return bool(self.sound_key)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        thresholds = self.moderation_thresholds
        if not isinstance(thresholds, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
            for k, v in thresholds.items()
        ):
            errors["moderation_thresholds"] = 'Write {"category": a score from 0 to 1}, like {"nsfw": 0.3}.'
        if isinstance(self.aspect_ratios, list) and self.default_aspect_ratio not in self.aspect_ratios:
            errors["default_aspect_ratio"] = "The default aspect ratio must be one of the allowed ones."
        if isinstance(self.durations, list) and self.default_duration_seconds not in self.durations:
            errors["default_duration_seconds"] = "The default duration must be one of the allowed ones."
        if self.status == TrendStatus.SCHEDULED and self.publish_at is None:
            errors["publish_at"] = "A scheduled trend needs a publish time."
        if self.publish_at and self.retire_at and self.retire_at <= self.publish_at:
            errors["retire_at"] = "The retire time must come after the publish time."
        if bool(self.cover_width) != bool(self.cover_height):
            errors["cover_height"] = "Give both the cover width and height, or neither."
        if self.sound_key and not self.sound_title.strip():
            errors["sound_title"] = "Give the sound a title; the app shows it with the trend."
        if not (self.price_draft <= self.price_standard <= self.price_cinema):
            errors["price_cinema"] = "Prices must not fall with quality: draft <= standard <= cinema."
        if errors:
            raise ValidationError(errors)


class TrendStat(models.Model):
    """Engagement of one trend in one hour: the decayed score is computed from these rows.

    Counting into hourly buckets (an atomic upsert-increment) keeps the table small whatever the traffic,
    and lets the score be recomputed with any half-life.
    """

    trend = models.ForeignKey(Trend, on_delete=models.CASCADE, related_name="stats")
    hour = models.IntegerField(help_text="Hours since the Unix epoch.")
    impressions = models.BigIntegerField(default=0)
    opens = models.BigIntegerField(default=0)
    generations_started = models.BigIntegerField(default=0)
    generations_succeeded = models.BigIntegerField(default=0)
    shares = models.BigIntegerField(default=0)
    favorites = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["trend", "hour"], name="trend_stat_one_row_per_hour")]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.trend_id} @ hour {self.hour}"


class TrendFavorite(BaseModel):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="trend_favorites"
    )
    trend = models.ForeignKey(Trend, on_delete=models.CASCADE, related_name="favorited_by")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "trend"], name="trend_favorite_once")]


class SectionType(models.TextChoices):
    HERO = "hero", "Hero"
    CAROUSEL = "carousel", "Carousel"
    GRID = "grid", "Grid"
    CATEGORY_CHIPS = "category_chips", "Category chips"
    PROMO = "promo", "Promo"
    CONTINUE = "continue", "Continue where you left off"
    SOUL_ID_PROMPT = "soul_id_prompt", "Soul ID prompt"


# Sections whose content depends on who asks: never part of the shared cached screen.
PERSONAL_SECTION_TYPES = frozenset({SectionType.CONTINUE, SectionType.SOUL_ID_PROMPT})
TREND_SECTION_TYPES = frozenset({SectionType.HERO, SectionType.CAROUSEL, SectionType.GRID})
# The first app version that shipped each section type: used when admin has no row for a type.
FIRST_APP_VERSIONS = {
    SectionType.HERO: "1.0",
    SectionType.CAROUSEL: "1.0",
    SectionType.GRID: "1.0",
    SectionType.CATEGORY_CHIPS: "1.2",
    SectionType.PROMO: "1.3",
    SectionType.CONTINUE: "1.5",
    SectionType.SOUL_ID_PROMPT: "1.5",
}


class SectionSource(models.TextChoices):
    MANUAL = "manual", "Hand-picked"
    TRENDING = "trending", "Trending now"
    NEW_TODAY = "new_today", "New today"
    CATEGORY = "category", "A category"
    FOR_YOU = "for_you", "For you"


class SectionTypeSupport(models.Model):
    """The first app version that can render a section type, per platform. Older apps never get it."""

    section_type = models.CharField(max_length=32, choices=SectionType.choices, unique=True)
    min_ios_version = models.CharField(max_length=32, default="1.0", validators=[validate_app_version])
    min_android_version = models.CharField(max_length=32, default="1.0", validators=[validate_app_version])

    class Meta:
        ordering = ["section_type"]
        verbose_name = "section type support"

    def __str__(self) -> str:
        return (
            f"{self.get_section_type_display()}: "
            f"iOS {self.min_ios_version}, Android {self.min_android_version}"
        )

    def min_version_for(self, platform: str) -> str:
        return self.min_ios_version if platform == "IOS" else self.min_android_version


class FeedSection(Targeting, BaseModel):
    """One section of the home screen, in `sort_order`."""

    section_type = models.CharField(max_length=32, choices=SectionType.choices)
    title = models.CharField(max_length=80, blank=True)
    titles = JSONField(default=dict, blank=True, validators=[validate_translations])
    subtitle = models.CharField(max_length=160, blank=True)
    subtitles = JSONField(default=dict, blank=True, validators=[validate_translations])
    sort_order = models.IntegerField(default=0)
    source = models.CharField(max_length=16, choices=SectionSource.choices, default=SectionSource.MANUAL)
    category = models.ForeignKey(
        Category, on_delete=models.PROTECT, null=True, blank=True, help_text="For the category source."
    )
    max_items = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    is_enabled = models.BooleanField(default=True)
    active_from = models.DateTimeField(null=True, blank=True)
    active_until = models.DateTimeField(null=True, blank=True)
    # Promo sections
    image_key = models.CharField(max_length=512, blank=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    action_url = models.CharField(
        max_length=300, blank=True, help_text="A deep link, like diffuse://soul-id."
    )

    class Meta:
        ordering = ["sort_order", "created_at"]

    def __str__(self) -> str:
        return f"{self.get_section_type_display()}: {self.title or self.get_source_display()}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.source == SectionSource.CATEGORY and self.category_id is None:
            errors["category"] = "Choose the category this section shows."
        if self.active_from and self.active_until and self.active_until <= self.active_from:
            errors["active_until"] = "The end of the active window must come after its start."
        if self.section_type == SectionType.PROMO and not self.action_url:
            errors["action_url"] = "A promo needs a deep link to open."
        if errors:
            raise ValidationError(errors)


class FeedSectionItem(models.Model):
    """A hand-picked trend in a section, in `sort_order`."""

    section = models.ForeignKey(FeedSection, on_delete=models.CASCADE, related_name="items")
    trend = models.ForeignKey(Trend, on_delete=models.CASCADE, related_name="section_items")
    sort_order = models.IntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "id"]
        constraints = [models.UniqueConstraint(fields=["section", "trend"], name="section_item_once")]

    def __str__(self) -> str:
        return f"#{self.sort_order}"


class ChangeAction(models.TextChoices):
    PUBLISHED = "published", "Published"
    SCHEDULED = "scheduled", "Scheduled"
    RETIRED = "retired", "Retired"
    UNPUBLISHED = "unpublished", "Back to draft"
    PUBLISH_BLOCKED = "publish_blocked", "Publishing blocked"
    PINNED = "pinned", "Pinned"
    UNPINNED = "unpinned", "Unpinned"
    BELOW_THRESHOLD = "below_threshold", "Score fell below the threshold"
    RECOVERED = "recovered", "Score recovered"


class TrendChange(models.Model):
    """What changed on a trend, when, why and by whom ("rotation" for the automatic job). Append-only."""

    AUTOMATIC = "rotation"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    trend = models.ForeignKey(Trend, on_delete=models.SET_NULL, null=True, related_name="changes")
    trend_slug = models.CharField(max_length=80)
    action = models.CharField(max_length=32, choices=ChangeAction.choices)
    reason = models.TextField()
    details = JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=254, help_text='"rotation" for the automatic job, else the curator.')

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.trend_slug}: {self.get_action_display()}"


class RotationRun(models.Model):
    """One run of the periodic rotation job: what it did and how long it took."""

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField()
    published = models.PositiveIntegerField(default=0)
    retired = models.PositiveIntegerField(default=0)
    rescored = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"rotation at {self.started_at:%Y-%m-%d %H:%M}"
