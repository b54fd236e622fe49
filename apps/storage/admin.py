from django.contrib import admin

from .models import Upload


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_per_page = 50  # pages of 50; these tables only grow
    list_display = ("id", "user", "status", "reject_reason", "content_type", "bytes", "created_at")
    list_filter = ("status", "reject_reason", "content_type")
    search_fields = ("id", "user__email", "key")
    readonly_fields = [field.name for field in Upload._meta.fields]
    raw_id_fields = ("user",)

    def has_add_permission(self, request) -> bool:
        return False
