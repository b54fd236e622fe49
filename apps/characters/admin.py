"""Soul IDs in the admin: status and counts only. Selfies, crops and face data are not shown here at all
(no staff browsing of biometric data); erasure and consent records are read-only audit trails."""

from django.contrib import admin
from django.db.models import Count

from .models import Character, ConsentRecord, ErasureRecord


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Character)
class CharacterAdmin(ReadOnlyAdmin):
    list_per_page = 50  # pages of 50; these tables only grow
    list_display = ("id", "owner", "name", "status", "photo_count", "created_at", "trained_at")
    list_filter = ("status",)
    fields = (
        "id",
        "owner",
        "name",
        "status",
        "training_progress",
        "created_at",
        "trained_at",
        "last_used_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(photo_count=Count("photos"))

    @admin.display(description="photos")
    def photo_count(self, obj) -> int:
        return obj.photo_count


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    list_per_page = 50  # pages of 50; these tables only grow
    list_display = ("id", "user", "character_ref", "text_version", "created_at", "withdrawn_at")


@admin.register(ErasureRecord)
class ErasureRecordAdmin(ReadOnlyAdmin):
    list_per_page = 50  # pages of 50; these tables only grow
    list_display = ("id", "user_ref", "character_ref", "trigger", "status", "created_at", "finished_at")
    list_filter = ("status", "trigger")
    readonly_fields = ("user_ref", "character_ref", "trigger", "status", "job", "artifacts", "finished_at")
