"""A selfie for a generation gets the Soul ID checks that apply to one photo (apps.characters.photo_checks:
readable, big enough, one face, large enough, not cut off, sharp, exposed) and is kept only as a copy
re-encoded from its pixels, so its EXIF and GPS are neither stored nor served back.

Checked when createGeneration first uses the upload, before anything is held: a refused selfie is
recorded on its upload (REJECTED with the reason, its file deleted) and answered UPLOAD_INVALID naming the
reason; an accepted one replaces the upload's file with the clean copy (`cleaned_at`), so it is checked
once however often it is used.
"""

from __future__ import annotations

import logging

from apps.characters.photo_checks import PhotoVerdict, Reason, check_photo, reason_message
from apps.characters.services import photo_rules
from apps.core.errors import UploadInvalid
from apps.storage.backends import ObjectNotFound, ObjectTooLarge, get_storage
from apps.storage.models import RejectReason, Upload
from apps.storage.services import upload_refuse, upload_replace_with_clean

logger = logging.getLogger(__name__)

# The photo checks' reasons as an upload's (the face reasons have the same names).
_UPLOAD_REASONS = {
    Reason.UNREADABLE: RejectReason.CORRUPT,
    Reason.UNSUPPORTED_FORMAT: RejectReason.UNSUPPORTED_TYPE,
}


def selfie_check(*, upload: Upload, field: str = "photoUploadId") -> Upload:
    """The verified upload, now holding the clean copy; UploadInvalid (with the reason) when refused."""
    if upload.cleaned_at is not None:
        return upload
    rules = photo_rules()
    try:
        data = get_storage().read(upload.key, max_bytes=rules.max_bytes)
    except ObjectTooLarge:
        verdict = PhotoVerdict(accepted=False, reasons=[Reason.TOO_LARGE])
    except ObjectNotFound:
        verdict = PhotoVerdict(accepted=False, reasons=[Reason.UNREADABLE])
    else:
        try:
            verdict = check_photo(data, rules=rules)
        except Exception:  # a file that breaks a decoder is the file's fault, not a server error
            logger.exception("checking selfie %s failed; refused as unreadable", upload.pk)
            verdict = PhotoVerdict(accepted=False, reasons=[Reason.UNREADABLE])
    if verdict.accepted:
        width, height = verdict.clean_size
        return upload_replace_with_clean(
            upload_id=upload.pk, data=verdict.clean_jpeg, width=width, height=height
        )
    reason = Reason(verdict.reasons[0])
    message = " ".join(reason_message(code, rules=rules) for code in verdict.reasons)
    upload_reason = _UPLOAD_REASONS.get(reason, RejectReason(reason.value))
    upload_refuse(upload_id=upload.pk, reason=upload_reason, message=message)
    raise UploadInvalid(message, field=field, reason=upload_reason)
