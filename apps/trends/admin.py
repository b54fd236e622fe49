"""Django admin for curators: trends, categories, the home screen's sections, and the rotation history.

Every save and action goes through apps/trends/services.py, which checks publishing, records the change
and invalidates the cached home screen after commit.
"""

from __future__ import annotations

import uuid

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.accounts.models import Platform
from apps.core.admin import ReadOnlyAdmin
from apps.core.choices import AspectRatio
from apps.core.errors import ValidationFailed
from apps.storage.backends import get_storage

from . import services
from .media import image_inspect, media_save, media_url, video_inspect
from .models import (
    Category,
    FeedSection,
    FeedSectionItem,
    RotationRun,
    SectionTypeSupport,
    Trend,
    TrendChange,
    TrendStatus,
)
from .screen import build_shared_screen, explain_sections, resolve_personal
from .selectors import audience_parse
from .sound import SOUND_CONTENT_TYPE, SOUND_EXTENSION, SoundInvalid, size_text, sound_prepare

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _split(text: str) -> list[str]:
    return [part.strip() for part in (text or "").replace("\n", ",").split(",") if part.strip()]


class TrendAdminForm(forms.ModelForm):
    """Friendlier inputs than raw JSON: comma lists, checkboxes, a route menu, and media uploads."""

    tags = forms.CharField(required=False, help_text="Comma-separated, like: summer, slow-mo")
    aspect_ratios = forms.MultipleChoiceField(
        choices=AspectRatio.choices, widget=forms.CheckboxSelectMultiple
    )
    durations = forms.CharField(help_text="Seconds, comma-separated, like: 5, 8")
    platforms = forms.MultipleChoiceField(
        choices=Platform.choices, widget=forms.CheckboxSelectMultiple, required=False, help_text="None: all."
    )
    locales = forms.CharField(required=False, help_text="Comma-separated, like: en, pt-BR. Empty: all.")
    preferred_model_route = forms.ChoiceField(choices=())
    cover_upload = forms.FileField(required=False, label="Upload a cover", help_text="JPEG, PNG or WebP.")
    preview_upload = forms.FileField(required=False, label="Upload a preview video", help_text="MP4.")
    sound_upload = forms.FileField(
        required=False,
        label="Upload a sound",
        help_text="MP3, AAC, WAV or M4A; stored as AAC at -14 LUFS (true peak -1 dBTP).",
    )
    remove_sound = forms.BooleanField(required=False, label="Remove the sound (videos become silent)")

    class Meta:
        model = Trend
        fields = (
            "slug", "title", "subtitle", "category", "tags", "status", "publish_at", "retire_at", "pinned",
            "sort_weight", "cover_image_key", "cover_width", "cover_height", "preview_video_key",
            "preview_width", "preview_height", "preview_duration_seconds", "sound_title", "sound_artist",
            "sound_licence", "prompt_template",
            "negative_prompt", "moderation_thresholds", "requires", "camera_body", "lens", "focal_length_mm",
            "aperture",
            "camera_movement",
            "movement_strength", "lighting", "mood", "aspect_ratios", "default_aspect_ratio", "durations",
            "default_duration_seconds", "preferred_model_route", "default_quality", "price_draft",
            "price_standard", "price_cinema", "platforms", "min_app_version", "locales",
        )  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        routes = sorted(services.known_model_routes())
        current = instance.preferred_model_route if instance and instance.pk else ""
        if current and current not in routes:
            routes.append(current)
        self.fields["preferred_model_route"].choices = [(route, route) for route in routes]
        if not self.is_bound and instance is not None:
            self.initial["tags"] = ", ".join(instance.tags or [])
            self.initial["durations"] = ", ".join(str(d) for d in instance.durations or [])
            self.initial["locales"] = ", ".join(instance.locales or [])
            if not instance.aspect_ratios:
                self.initial["aspect_ratios"] = [AspectRatio.PORTRAIT_9_16]

    def clean_tags(self) -> list[str]:
        return [tag.lower() for tag in _split(self.cleaned_data.get("tags", ""))]

    def clean_locales(self) -> list[str]:
        return _split(self.cleaned_data.get("locales", ""))

    def clean_durations(self) -> list[int]:
        try:
            return [int(part) for part in _split(self.cleaned_data.get("durations", ""))]
        except ValueError:
            raise DjangoValidationError("Whole seconds, comma-separated, like: 5, 8") from None

    def _read(self, name: str) -> bytes | None:
        upload = self.cleaned_data.get(name)
        if not upload:
            return None
        if upload.size > MAX_UPLOAD_BYTES:
            self.add_error(name, "The file is over 20 MB.")
            return None
        return upload.read()

    def clean(self):
        cleaned = super().clean()
        # Uploaded media go to storage now, so the publish checks below see them; keys are unique, so a
        # form that fails for another reason only leaves an unused file behind.
        cover = self._read("cover_upload")
        if cover is not None:
            try:
                info = image_inspect(cover)
            except ValueError as exc:
                self.add_error("cover_upload", str(exc))
            else:
                key = f"trends/covers/{uuid.uuid4().hex}.{info.extension}"
                media_save(key, cover)
                cleaned.update(cover_image_key=key, cover_width=info.width, cover_height=info.height)
        preview = self._read("preview_upload")
        if preview is not None:
            try:
                probed = video_inspect(preview)
            except ValueError as exc:
                self.add_error("preview_upload", str(exc))
            else:
                key = f"trends/previews/{uuid.uuid4().hex}.mp4"
                media_save(key, preview)
                cleaned["preview_video_key"] = key
                if probed:
                    cleaned.update(
                        preview_width=probed[0], preview_height=probed[1], preview_duration_seconds=probed[2]
                    )
        self._clean_sound(cleaned)
        return cleaned

    def _clean_sound(self, cleaned: dict) -> None:
        """A sound upload is probed and normalized (apps/trends/sound.py), then stored through apps.storage
        where the GPU workers read it; a file that is not usable audio is a form error on the upload."""
        upload = self.cleaned_data.get("sound_upload")
        if not upload:
            if cleaned.get("remove_sound"):
                self.instance.sound_key = ""
                self.instance.sound_duration_seconds = self.instance.sound_loudness_lufs = None
            return
        max_bytes = settings.TRENDS_SOUND_MAX_BYTES
        if upload.size > max_bytes:
            self.add_error("sound_upload", f"The file is over {size_text(max_bytes)}.")
            return
        try:
            sound = sound_prepare(
                upload.read(),
                max_seconds=settings.TRENDS_SOUND_MAX_SECONDS,
                max_bytes=max_bytes,
                target_lufs=settings.TRENDS_SOUND_TARGET_LUFS,
                true_peak_dbtp_max=settings.TRENDS_SOUND_TRUE_PEAK_DBTP,
            )
        except SoundInvalid as exc:
            self.add_error("sound_upload", str(exc))
            return
        key = f"trends/sounds/{uuid.uuid4().hex}.{SOUND_EXTENSION}"
        get_storage().write(key, sound.data, content_type=SOUND_CONTENT_TYPE)
        # Not form fields (so an admin cannot type a key): set on the instance the form saves.
        self.instance.sound_key = key
        self.instance.sound_duration_seconds = sound.duration_seconds
        self.instance.sound_loudness_lufs = sound.loudness_lufs

    def _post_clean(self):
        super()._post_clean()
        if self.errors or self.instance.status not in (TrendStatus.LIVE, TrendStatus.SCHEDULED):
            return
        problems = services.trend_publish_problems(trend=self.instance)
        if problems:
            self.add_error(
                "status",
                f"This trend cannot be {self.instance.get_status_display().lower()} yet: "
                + " ".join(problems),
            )


class TrendChangeInline(admin.TabularInline):
    model = TrendChange
    extra = 0
    can_delete = False
    fields = ("created_at", "action", "reason", "actor")
    readonly_fields = fields
    ordering = ("-created_at",)
    max_num = 0
    verbose_name_plural = "History (rotation and curators)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


# Covers and previews are portrait (9:16): a fixed box for each, so a list lays out once, before the
# images arrive, and an odd-sized file is cropped to the box instead of pushing the columns about.
def _box(height: int) -> tuple[int, int]:
    return round(height * 9 / 16), height


def _thumbnail(key: str, height: int = 64) -> str:
    url = media_url(key)
    if not url:
        return "—"
    width, height = _box(height)
    return format_html(
        '<img src="{}" alt="" width="{}" height="{}" style="object-fit:cover;border-radius:4px" '
        'loading="lazy">',
        url,
        width,
        height,
    )


def _video(key: str, height: int = 64) -> str:
    url = media_url(key)
    if not url:
        return "—"
    width, height = _box(height)
    return format_html(
        '<video src="{}" width="{}" height="{}" style="object-fit:cover;border-radius:4px" muted loop '
        'autoplay playsinline preload="none"></video>',
        url,
        width,
        height,
    )


@admin.register(Trend)
class TrendAdmin(admin.ModelAdmin):
    form = TrendAdminForm
    list_display = (
        "cover",
        "preview",
        "sound",
        "title",
        "status",
        "category",
        "score",
        "generations_succeeded",
        "success",
        "shares",
        "price_standard",
        "pinned",
        "published_at",
    )
    list_display_links = ("cover", "title")
    list_filter = ("status", "category", "pinned", "requires", "default_quality", "preferred_model_route")
    search_fields = ("title", "slug", "subtitle", "category__title")
    list_select_related = ("category",)
    date_hierarchy = "published_at"
    ordering = ("-pinned", "-trending_score", "slug")
    actions = ("publish_selected", "retire_selected", "pin_selected", "unpin_selected")
    inlines = [TrendChangeInline]
    readonly_fields = (
        "sound_info",
        "cover_preview",
        "video_preview",
        "published_at",
        "retired_at",
        "impressions",
        "opens",
        "generations_started",
        "generations_succeeded",
        "shares",
        "favorites",
        "trending_score",
        "score_updated_at",
        "below_threshold_since",
    )
    fieldsets = (
        (None, {"fields": ("slug", "title", "subtitle", "category", "tags")}),
        (
            "Status and schedule",
            {
                "fields": (
                    "status",
                    "publish_at",
                    "retire_at",
                    "pinned",
                    "sort_weight",
                    "published_at",
                    "retired_at",
                )
            },
        ),
        (
            "Media",
            {
                "fields": (
                    "cover_preview",
                    "cover_upload",
                    "cover_image_key",
                    "cover_width",
                    "cover_height",
                    "video_preview",
                    "preview_upload",
                    "preview_video_key",
                    "preview_width",
                    "preview_height",
                    "preview_duration_seconds",
                )
            },
        ),
        (
            "Sound",
            {
                "fields": (
                    "sound_info",
                    "sound_upload",
                    "remove_sound",
                    "sound_title",
                    "sound_artist",
                    "sound_licence",
                )
            },
        ),
        ("Prompt", {"fields": ("prompt_template", "negative_prompt", "requires", "moderation_thresholds")}),
        (
            "Cinematic defaults",
            {
                "fields": (
                    "camera_body",
                    "lens",
                    "focal_length_mm",
                    "aperture",
                    "camera_movement",
                    "movement_strength",
                    "lighting",
                    "mood",
                )
            },
        ),
        (
            "Output and price",
            {
                "fields": (
                    "aspect_ratios",
                    "default_aspect_ratio",
                    "durations",
                    "default_duration_seconds",
                    "preferred_model_route",
                    "default_quality",
                    "price_draft",
                    "price_standard",
                    "price_cinema",
                )
            },
        ),
        ("Targeting", {"fields": ("platforms", "min_app_version", "locales")}),
        (
            "Engagement",
            {
                "classes": ("collapse",),
                "fields": (
                    "impressions",
                    "opens",
                    "generations_started",
                    "generations_succeeded",
                    "shares",
                    "favorites",
                    "trending_score",
                    "score_updated_at",
                    "below_threshold_since",
                ),
            },
        ),
    )

    @admin.display(description="Cover")
    def cover(self, obj: Trend) -> str:
        return _thumbnail(obj.cover_image_key)

    @admin.display(description="Preview")
    def preview(self, obj: Trend) -> str:
        return _video(obj.preview_video_key)

    @admin.display(description="Cover")
    def cover_preview(self, obj: Trend) -> str:
        return _thumbnail(obj.cover_image_key, height=240)

    @admin.display(description="Preview video")
    def video_preview(self, obj: Trend) -> str:
        return _video(obj.preview_video_key, height=240)

    @admin.display(description="Stored sound")
    def sound_info(self, obj: Trend) -> str:
        if not obj.sound_key:
            return "— (videos of this trend are silent)"
        return format_html(
            '<audio controls preload="none" src="{}"></audio><br>{} · {} s · {} LUFS',
            get_storage().download_url(obj.sound_key),
            obj.sound_key,
            f"{obj.sound_duration_seconds or 0:.1f}",
            "?" if obj.sound_loudness_lufs is None else f"{obj.sound_loudness_lufs:.1f}",
        )

    @admin.display(description="Sound", boolean=True)
    def sound(self, obj: Trend) -> bool:
        return obj.has_sound

    @admin.display(description="Score", ordering="trending_score")
    def score(self, obj: Trend) -> str:
        return f"{obj.trending_score:.4f}"

    @admin.display(description="Success")
    def success(self, obj: Trend) -> str:
        rate = obj.success_rate
        return "—" if rate is None else f"{rate:.0%}"

    def save_model(self, request, obj: Trend, form, change: bool) -> None:
        # The form ran the same publish checks and showed their messages; the service is the final guard.
        services.trend_save(trend=obj, actor=request.user.get_username())

    def delete_model(self, request, obj) -> None:
        sound_key = obj.sound_key
        super().delete_model(request, obj)
        services.trend_sounds_release_on_commit([sound_key])
        services.feed_changed()

    def delete_queryset(self, request, queryset) -> None:
        sound_keys = list(queryset.values_list("sound_key", flat=True))
        super().delete_queryset(request, queryset)
        services.trend_sounds_release_on_commit(sound_keys)
        services.feed_changed()

    def _each(self, request, queryset, action, done: str) -> None:
        changed, failed = 0, []
        for trend in queryset:
            try:
                if action(trend):
                    changed += 1
            except ValidationFailed as exc:
                failed.append(exc.message)
        if changed:
            self.message_user(request, f"{changed} {done}.", messages.SUCCESS)
        for message in failed:
            self.message_user(request, message, messages.ERROR)
        if not changed and not failed:
            self.message_user(request, "Nothing to change.", messages.INFO)

    @admin.action(description="Publish the selected trends now", permissions=["change"])
    def publish_selected(self, request, queryset) -> None:
        actor = request.user.get_username()
        self._each(request, queryset, lambda t: services.trend_publish(trend=t, actor=actor), "published")

    @admin.action(description="Retire the selected trends", permissions=["change"])
    def retire_selected(self, request, queryset) -> None:
        actor = request.user.get_username()
        self._each(request, queryset, lambda t: services.trend_retire(trend=t, actor=actor), "retired")

    @admin.action(description="Pin the selected trends", permissions=["change"])
    def pin_selected(self, request, queryset) -> None:
        actor = request.user.get_username()
        self._each(
            request,
            queryset,
            lambda t: services.trend_set_pinned(trend=t, pinned=True, actor=actor),
            "pinned",
        )

    @admin.action(description="Unpin the selected trends", permissions=["change"])
    def unpin_selected(self, request, queryset) -> None:
        actor = request.user.get_username()
        self._each(
            request,
            queryset,
            lambda t: services.trend_set_pinned(trend=t, pinned=False, actor=actor),
            "unpinned",
        )


class FeedChangesInvalidate:
    """Any edit of the screen's layout invalidates the cached screen after commit."""

    def save_model(self, request, obj, form, change) -> None:
        obj.full_clean()
        super().save_model(request, obj, form, change)
        services.feed_changed()

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        services.feed_changed()

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        services.feed_changed()

    def delete_queryset(self, request, queryset) -> None:
        super().delete_queryset(request, queryset)
        services.feed_changed()


@admin.register(Category)
class CategoryAdmin(FeedChangesInvalidate, admin.ModelAdmin):
    list_display = ("title", "slug", "emoji", "sort_order", "is_active", "live_trends")
    list_editable = ("sort_order", "is_active")
    search_fields = ("title", "slug")
    prepopulated_fields = {"slug": ("title",)}

    @admin.display(description="Live trends")
    def live_trends(self, obj: Category) -> int:
        return obj.trends.filter(status=TrendStatus.LIVE).count()


class FeedSectionItemInline(admin.TabularInline):
    model = FeedSectionItem
    extra = 1
    autocomplete_fields = ("trend",)
    fields = ("sort_order", "trend")
    ordering = ("sort_order",)
    verbose_name_plural = "Hand-picked trends (for the hand-picked source), in order"


class PreviewForm(forms.Form):
    platform = forms.ChoiceField(choices=Platform.choices)
    app_version = forms.CharField(initial="2.0.0")
    locale = forms.CharField(initial="en", required=False)


@admin.register(FeedSection)
class FeedSectionAdmin(FeedChangesInvalidate, admin.ModelAdmin):
    list_display = (
        "sort_order",
        "section_type",
        "title",
        "source",
        "category",
        "is_enabled",
        "window",
        "targeting",
    )
    list_display_links = ("section_type", "title")
    list_editable = ("sort_order", "is_enabled")
    list_filter = ("section_type", "source", "is_enabled")
    ordering = ("sort_order", "created_at")
    inlines = [FeedSectionItemInline]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "section_type",
                    "title",
                    "titles",
                    "subtitle",
                    "subtitles",
                    "sort_order",
                    "is_enabled",
                )
            },
        ),
        ("Content", {"fields": ("source", "category", "max_items")}),
        (
            "Promo",
            {"classes": ("collapse",), "fields": ("image_key", "image_width", "image_height", "action_url")},
        ),
        (
            "When and who",
            {"fields": ("active_from", "active_until", "platforms", "min_app_version", "locales")},
        ),
    )

    @admin.display(description="Active")
    def window(self, obj: FeedSection) -> str:
        if not obj.active_from and not obj.active_until:
            return "always"
        start = obj.active_from.strftime("%Y-%m-%d %H:%M") if obj.active_from else "…"
        end = obj.active_until.strftime("%Y-%m-%d %H:%M") if obj.active_until else "…"
        return f"{start} → {end}"

    @admin.display(description="Who")
    def targeting(self, obj: FeedSection) -> str:
        parts = []
        if obj.platforms:
            parts.append("/".join(obj.platforms))
        if obj.min_app_version:
            parts.append(f"≥ {obj.min_app_version}")
        if obj.locales:
            parts.append(", ".join(obj.locales))
        return "; ".join(parts) or "everyone"

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("preview/", preview, name="trends_feedsection_preview"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "preview_url": reverse("admin:trends_feedsection_preview")}
        return super().changelist_view(request, extra_context)

    def preview_view(self, request):
        """The home screen as a chosen platform, app version and locale would receive it (signed out)."""
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        form = PreviewForm(request.GET or None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Home screen preview",
            "form": form,
        }
        if form.is_valid():
            try:
                audience = audience_parse(
                    platform=form.cleaned_data["platform"],
                    app_version=form.cleaned_data["app_version"],
                    locale=form.cleaned_data["locale"] or None,
                )
            except ValidationFailed as exc:
                form.add_error(None, exc.message)
            else:
                started = timezone.now()
                screen, _ = build_shared_screen(audience)
                sections = resolve_personal(screen, None)
                context.update(
                    audience=audience,
                    sections=[
                        (section, [(t, media_url(t.cover_image_key)) for t in section.trends])
                        for section in sections
                    ],
                    explained=explain_sections(audience, screen),
                    build_ms=(timezone.now() - started).total_seconds() * 1000,
                )
        return render(request, "admin/trends/preview.html", context)


@admin.register(SectionTypeSupport)
class SectionTypeSupportAdmin(FeedChangesInvalidate, admin.ModelAdmin):
    list_display = ("section_type", "min_ios_version", "min_android_version")
    list_editable = ("min_ios_version", "min_android_version")


@admin.register(TrendChange)
class TrendChangeAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "trend_slug", "action", "reason", "actor")
    list_filter = ("action", "actor")
    search_fields = ("trend_slug", "reason")
    date_hierarchy = "created_at"


@admin.register(RotationRun)
class RotationRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "published", "retired", "rescored", "seconds")
    date_hierarchy = "started_at"
