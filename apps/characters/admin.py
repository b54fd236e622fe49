"""Soul IDs in the admin: status and counts only. Selfies, crops and face data are not shown here at all
(no staff browsing of biometric data); erasure and consent records are read-only audit trails. Nothing is
deleted here: a Soul ID is erased by its owner (deleteCharacter, account deletion) or the retention purge,
which remove its photos and weights from storage and keep an erasure record; a row deleted in the admin
would leave both behind."""

from django.contrib import admin
from django.db.models import Count

from apps.core.admin import ReadOnlyAdmin

from .models import Character, ConsentRecord, ErasureRecord


@admin.register(Character)
class CharacterAdmin(ReadOnlyAdmin):
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
    list_display = ("id", "user", "character_ref", "text_version", "created_at", "withdrawn_at")


@admin.register(ErasureRecord)
class ErasureRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "user_ref", "character_ref", "trigger", "status", "created_at", "finished_at")
    list_filter = ("status", "trigger")
    readonly_fields = ("user_ref", "character_ref", "trigger", "status", "job", "artifacts", "finished_at")
