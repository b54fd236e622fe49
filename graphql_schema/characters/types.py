"""GraphQL types of Soul IDs (API.md): Character, CharacterPhoto, CharacterEvent.

Every query path loads a character with its photos (`prefetch_related("photos")`), so listing them costs
a constant number of queries.
"""

from __future__ import annotations

from datetime import datetime

import strawberry
import strawberry_django
from django.conf import settings
from strawberry import Info

from apps.characters import models, selectors
from apps.characters.photo_checks import PhotoRules, reason_message

from ..enums import CharacterPhotoStatus, CharacterStatus, PhotoReason
from ..toolkit import MediaFile, ModelNode, media_file, node_id


def _rules() -> PhotoRules:
    return PhotoRules(max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.UPLOAD_MAX_PIXELS)


@strawberry_django.type(models.CharacterPhoto, name="CharacterPhoto", description="One selfie of a Soul ID.")
class CharacterPhotoType(ModelNode):
    created_at: datetime

    @strawberry_django.field
    async def status(self, root: strawberry.Parent[models.CharacterPhoto]) -> CharacterPhotoStatus:  # type: ignore[valid-type]
        return CharacterPhotoStatus(root.status)

    @strawberry_django.field(description="Why the photo is not used; empty when accepted or pending.")
    async def reasons(self, root: strawberry.Parent[models.CharacterPhoto]) -> list[PhotoReason]:  # type: ignore[valid-type]
        return [PhotoReason(reason) for reason in root.reasons]

    @strawberry_django.field(description="What to do about it, for the user; null when nothing is wrong.")
    async def message(self, root: strawberry.Parent[models.CharacterPhoto]) -> str | None:
        if not root.reasons:
            return None
        rules = _rules()
        return " ".join(reason_message(reason, rules=rules) for reason in root.reasons)

    @strawberry_django.field(
        only=["upload_ref"],
        description="The uploadId this photo was added from (addCharacterPhotos), so the app can match "
        "each verdict to its file.",
    )
    async def upload_id(self, root: strawberry.Parent[models.CharacterPhoto]) -> strawberry.ID | None:
        return node_id("Upload", root.upload_ref) if root.upload_ref else None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return queryset & selectors.character_photos_visible_to(user=info.context.user)


@strawberry_django.type(
    models.Character,
    name="Character",
    description="A Soul ID: a user's identity, made from their selfies, to appear in videos.",
    disable_optimization=True,  # every query path loads it with its photos
)
class CharacterType(ModelNode):
    name: str
    created_at: datetime
    updated_at: datetime
    training_progress: float = strawberry_django.field(description="0 to 1 while training.")
    training_eta_seconds: int | None = strawberry_django.field(description="While training.")
    training_step: int = strawberry_django.field(description="Training steps done.")
    training_total: int = strawberry_django.field(
        name="trainingTotalSteps", description="Training steps in all (0 before training)."
    )

    @strawberry_django.field
    async def status(self, root: strawberry.Parent[models.Character]) -> CharacterStatus:  # type: ignore[valid-type]
        return CharacterStatus(root.status)

    @strawberry_django.field(description="Why the last training failed, for the user; null otherwise.")
    async def failure_message(self, root: strawberry.Parent[models.Character]) -> str | None:
        return root.failure_message or None if root.status == models.CharacterStatus.FAILED else None

    @strawberry_django.field(
        description="A face crop from the Soul ID's best photo (a JPEG), once trained; the URL expires."
    )
    async def thumbnail(self, root: strawberry.Parent[models.Character], info: Info) -> MediaFile | None:
        if root.status == models.CharacterStatus.DELETING:
            return None
        return media_file(info, root, "thumbnail", content_type="image/jpeg")

    @strawberry_django.field(description="Every photo, in the order added.")
    def photos(self, root: strawberry.Parent[models.Character]) -> list[CharacterPhotoType]:
        return list(root.photos.all())

    @strawberry_django.field(description="Accepted photos that are not duplicates: what training uses.")
    def accepted_photo_count(self, root: strawberry.Parent[models.Character]) -> int:
        return sum(1 for photo in root.photos.all() if photo.status == models.PhotoStatus.ACCEPTED)

    @strawberry_django.field(description="Accepted, distinct photos training needs at least.")
    async def min_photos(self, root: strawberry.Parent[models.Character]) -> int:
        return settings.CHARACTERS_MIN_PHOTOS

    @strawberry_django.field(description="Photos a Soul ID takes at most.")
    async def max_photos(self, root: strawberry.Parent[models.Character]) -> int:
        return settings.CHARACTERS_MAX_PHOTOS

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        visible = queryset & selectors.characters_visible_to(user=info.context.user)
        return visible.prefetch_related("photos")


@strawberry.type(description="A Soul ID after a change: photo verdicts, training progress, ready or failed.")
class CharacterEvent:
    sequence: int = strawberry.field(description="Grows with every change of this Soul ID.")
    character: CharacterType


@strawberry.type
class CharacterPayload:
    character: CharacterType
