"""A selfie for a generation gets the Soul ID checks that apply to one photo (apps.characters.photo_checks:
readable, big enough, one face, large enough, not cut off, sharp, exposed) and is kept only as a copy
re-encoded from its pixels, so its EXIF and GPS are neither stored nor served back.

Checked when createGeneration first uses the upload, before anything is held: a refused selfie is
recorded on its upload (REJECTED with the reason, its file deleted) and answered UPLOAD_INVALID naming the
reason; an accepted one replaces the upload's file with the clean copy (`cleaned_at`), so it is checked
once however often it is used.
"""

from __future__ import annotations

from apps.characters.photo_checks import Reason, reason_message
from apps.characters.services import check_stored_photo, photo_rules
from apps.core.errors import UploadInvalid
from apps.storage.models import RejectReason, Upload
from apps.storage.services import upload_refuse, upload_replace_with_clean

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
    verdict = check_stored_photo(upload.key, rules=rules)
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
