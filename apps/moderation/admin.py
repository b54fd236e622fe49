from django.contrib import admin

from apps.core.admin import ReadOnlyAdmin

from .models import BlockedTerm, ModerationDecision


@admin.register(BlockedTerm)
class BlockedTermAdmin(admin.ModelAdmin):
    list_display = ("term", "normalized", "category", "locale", "match_anywhere", "enabled")
    list_filter = ("category", "locale", "enabled", "match_anywhere")
    list_editable = ("enabled",)
    search_fields = ("term", "normalized", "note")
    readonly_fields = ("normalized",)


@admin.register(ModerationDecision)
class ModerationDecisionAdmin(ReadOnlyAdmin):
    """The audit: every automatic and staff decision, never edited."""

    # What was decided first; the generation's id (long) last, where a narrow window cuts the table.
    list_display = ("created_at", "subject", "decision", "category_list", "user", "decided_by", "object_ref")
    list_filter = ("subject", "decision")
    search_fields = ("object_ref", "user__email", "decided_by__email")
    date_hierarchy = "created_at"

    @admin.display(description="Categories")
    def category_list(self, obj: ModerationDecision) -> str:
        return ", ".join(obj.categories) or "-"
