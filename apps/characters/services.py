"""Soul ID writes, importable from one place. Each concern has its own module:

- photos.py    creation under consent, adding and removing photos, each photo's check;
- training.py  the training request (price held, TrainingJob handed to the one job lifecycle);
- jobs.py      the training kind of GPU job: the hooks apps/jobs runs on the worker's events;
- erasure.py   deletion, account erasure, the retention purge, and marking a Soul ID used.
"""

from .erasure import (
    Trigger,
    character_delete,
    character_erase,
    character_mark_used,
    characters_erase_for_user,
    characters_purge_expired,
)
from .jobs import TRAINING_JOBS
from .photos import (
    EDITABLE,
    character_add_photos,
    character_create,
    character_photo_check,
    character_remove_photo,
    character_uploads_request,
    check_stored_photo,
    photo_rules,
)
from .training import character_train

__all__ = [
    "EDITABLE",
    "TRAINING_JOBS",
    "Trigger",
    "character_add_photos",
    "character_create",
    "character_delete",
    "character_erase",
    "character_mark_used",
    "character_photo_check",
    "character_remove_photo",
    "character_train",
    "character_uploads_request",
    "check_stored_photo",
    "characters_erase_for_user",
    "characters_purge_expired",
    "photo_rules",
]
