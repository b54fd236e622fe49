"""Admin: model routes and price rules (staff edit them), generations (read-only, with a cancel action)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.utils.html import format_html

from apps.core.admin import ReadOnlyAdmin
from apps.trends.models import QualityTier

from . import services
from .models import Generation, GenerationStatus, Lane, ModelRoute, PriceRule, RetentionRecord


class ModelRouteForm(forms.ModelForm):
    quality_tiers = forms.MultipleChoiceField(
        choices=QualityTier.choices, widget=forms.CheckboxSelectMultiple
    )
    lanes = forms.MultipleChoiceField(choices=Lane.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ModelRoute
        fields = (
            "name",
            "description",
            "enabled",
            "fallback",
            "family",
            "checkpoint",
            "device",
            "image_conditioning",
            "lora_support",
            "lora_stacking",
            "width",
            "height",
            "fps",
            "frames",
            "steps",
            "guidance",
            "speed_profile",
            "scheduler",
            "quality_tiers",
            "lanes",
            "cost_per_second",
            "seconds_per_step",
            "overhead_seconds",
        )


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    form = ModelRouteForm
    list_display = (
        "name",
        "family",
        "device",
        "enabled",
        "native_size",
        "steps",
        "seconds_per_step",
        "overhead_seconds",
        "timing_samples",
        "fallback",
    )
    list_filter = ("enabled", "family", "device")
    list_editable = ("enabled",)
    search_fields = ("name", "checkpoint", "description")
    readonly_fields = ("timing_samples", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "fallback")}),
        (
            "Model",
            {
                "fields": (
                    "family",
                    "checkpoint",
                    "device",
                    "image_conditioning",
                    "lora_support",
                    "lora_stacking",
                )
            },
        ),
        ("Output", {"fields": ("width", "height", "fps", "frames", "steps", "guidance", "scheduler")}),
        ("GPU speed-ups", {"fields": ("speed_profile",)}),
        ("Quality tiers", {"fields": ("render_profiles",)}),
        ("Who it serves", {"fields": ("quality_tiers", "lanes")}),
        (
            "Cost and timing",
            {"fields": ("cost_per_second", "seconds_per_step", "overhead_seconds", "timing_samples")},
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="Native size")
    def native_size(self, route: ModelRoute) -> str:
        return f"{route.width}x{route.height}, {route.frames} frames at {route.fps} fps"


@admin.register(PriceRule)
class PriceRuleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "multiplier", "add_credits", "enabled", "note")
    list_filter = ("enabled", "quality", "route")
    list_editable = ("enabled",)
    fields = ("route", "quality", "duration_seconds", "multiplier", "add_credits", "enabled", "note")


class StatusFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "In progress (queued or running)"),
            *GenerationStatus.choices,
            ("deleted", "Deleted"),
        ]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "active":
            return queryset.filter(status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING])
        if value == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        if value in GenerationStatus.values:
            return queryset.filter(status=value)
        return queryset


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "owner",
        "trend_slug",
        "route_name",
        "status",
        "stage",
        "progress_percent",
        "attempt",
        "quality",
        "lane",
        "quoted_credits",
        "credits_charged",
        "failure_code",
        "run_seconds",
    )
    list_filter = (StatusFilter, "lane", "quality", "route_name", "failure_code")
    search_fields = ("id", "owner__email", "trend_slug", "idempotency_key")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    actions = ["cancel_generations", "retry_generations"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Generation._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the ledger refers to it; users delete through the app (outputs removed)

    @admin.display(description="Progress")
    def progress_percent(self, generation: Generation) -> str:
        return f"{generation.progress:.0%}"

    @admin.display(description="Run time")
    def run_seconds(self, generation: Generation) -> str:
        total = (generation.timings or {}).get("total")
        return format_html("{} s", round(total, 1)) if isinstance(total, int | float) else "-"

    @admin.action(
        description="Cancel the selected generations (release their credits)", permissions=["change"]
    )
    def cancel_generations(self, request, queryset):
        canceled = 0
        for generation in queryset.select_related("owner").filter(
            status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING]
        ):
            services.generation_cancel(user=generation.owner, generation_id=generation.pk)
            canceled += 1
        self.message_user(request, f"{canceled} generation(s) canceled.", messages.SUCCESS)

    @admin.action(
        description="Retry the selected failed generations (free of charge)", permissions=["change"]
    )
    def retry_generations(self, request, queryset):
        retried = 0
        for generation_id in queryset.filter(status=GenerationStatus.FAILED).values_list("pk", flat=True):
            generation = services.generation_retry_by_staff(generation_id=generation_id)
            retried += generation.status == GenerationStatus.QUEUED
        self.message_user(request, f"{retried} generation(s) queued again.", messages.SUCCESS)


@admin.register(RetentionRecord)
class RetentionRecordAdmin(ReadOnlyAdmin):
    """What the retention purge deleted (apps/generations/retention.py)."""

    list_display = ("created_at", "kind", "user_ref", "upload_ref", "term_days")
    list_filter = ("kind",)
    search_fields = ("user_ref", "upload_ref")
