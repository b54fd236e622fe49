"""Soul ID reads, with the access check: another user's Soul ID is NotFound, exactly like a missing one.
A Soul ID being erased (DELETING) is gone as far as the API is concerned."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from apps.core.errors import CharacterNotReady, NotFound

from .models import Character, CharacterPhoto, CharacterStatus, PhotoStatus


def _pk(character_id) -> uuid.UUID:
    try:
        return uuid.UUID(str(character_id))
    except ValueError:
        raise NotFound("This Soul ID does not exist.", field="characterId") from None


def characters_visible_to(*, user) -> QuerySet[Character]:
    """The user's Soul IDs that are not being erased, newest first; none when signed out."""
    if user is None:
        return Character.objects.none()
    return (
        Character.objects.filter(owner=user).exclude(status=CharacterStatus.DELETING).order_by("-created_at")
    )


def character_photos_visible_to(*, user) -> QuerySet[CharacterPhoto]:
    """The photos of the user's Soul IDs that are not being erased; none when signed out."""
    if user is None:
        return CharacterPhoto.objects.none()
    return CharacterPhoto.objects.filter(character__in=characters_visible_to(user=user).order_by())


def character_usable_exists_for_user(*, user) -> bool:
    """Whether the user has a Soul ID that can be used: trained, or being retrained with its LoRA kept."""
    return characters_visible_to(user=user).exclude(lora_key="").exists()


def character_get_for_user(*, user, character_id, for_update: bool = False) -> Character:
    queryset = characters_visible_to(user=user).filter(pk=_pk(character_id))
    if for_update:
        queryset = queryset.select_for_update()
    character = queryset.first()
    if character is None:
        raise NotFound("This Soul ID does not exist.", field="characterId")
    return character


def character_lora_base(character: Character) -> tuple[str, str]:
    """(family, base checkpoint) the Soul ID's LoRA was trained for (gpu_worker.contract.lora_fits_route);
    ("", "") when not recorded, which fits no route."""
    metadata = character.lora_metadata or {}
    return str(metadata.get("family") or ""), str(metadata.get("base_checkpoint") or "")


def character_lora_for_user(*, user, character_id) -> tuple[str, tuple[str, str]]:
    """The LoRA key of a trained Soul ID of the user's and the (family, base checkpoint) it was trained
    for (for generations): NotFound, or CharacterNotReady. A READY Soul ID being trained again (more
    photos) keeps its LoRA usable until the new one is READY, whatever its status meanwhile."""
    character = character_get_for_user(user=user, character_id=character_id)
    if not character.lora_key:
        raise CharacterNotReady(
            "This Soul ID is not ready yet. Use it once its training has finished.", field="characterId"
        )
    return character.lora_key, character_lora_base(character)


def character_lora_key_for_user(*, user, character_id) -> str:
    """The LoRA of a trained Soul ID of the user's (for generations): NotFound, or CharacterNotReady."""
    return character_lora_for_user(user=user, character_id=character_id)[0]


def character_lora_base_by_id(*, character_id) -> tuple[str, str]:
    """(family, base checkpoint) of a Soul ID's LoRA, no access check (a generation's fallback route);
    ("", "") when the Soul ID is gone."""
    character = Character.objects.filter(pk=character_id).only("lora_metadata").first()
    return character_lora_base(character) if character is not None else ("", "")


def character_reference_photo_key(*, character_id) -> str:
    """The clean (metadata-free, upright) key of the Soul ID's sharpest accepted photo, for routes that take
    a first frame; "" when it has none."""
    photos = (
        CharacterPhoto.objects.filter(character_id=character_id, status=PhotoStatus.ACCEPTED)
        .exclude(clean_key="")
        .order_by("created_at")
        .values_list("clean_key", "measurements")
    )
    best = max(photos, key=lambda row: float((row[1] or {}).get("sharpness") or 0.0), default=None)
    return best[0] if best else ""


def character_trigger_by_id(*, character_id) -> str:
    """The trigger token a Soul ID's LoRA was trained with (what a generation's prompt must say to bind
    the identity), no access check; "" when the Soul ID is gone or trained before it was recorded."""
    character = Character.objects.filter(pk=character_id).only("lora_metadata").first()
    return str((character.lora_metadata or {}).get("trigger") or "") if character is not None else ""
