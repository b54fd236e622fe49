"""The embedded mode's stand-in for S3: signed upload and download URLs served by Django.

An upload is a multipart POST shaped like S3's presigned POST: the `fields` from `requestUploads`, then
the file in the field `file`. The URL carries a signed, expiring grant (key, content type, size cap),
so everything is checked before the body is parsed, and the file is streamed to disk in chunks with a
running byte count: it is never held in memory, and the parse stops one chunk past the cap.

Errors are JSON `{"error": {"code", "message"}}` with S3's codes and the status a client would get
from S3 (403 for a bad or expired signature or a field the grant does not allow; 400/413 for size).
Nothing is stored unless every check passed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from pathlib import Path

from asgiref.sync import sync_to_async
from django.core import signing
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.multipartparser import MultiPartParserError
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from .backends import FILE_FIELD, LocalStorage, ObjectNotFound, get_storage

logger = logging.getLogger(__name__)

# Room for the form fields and multipart framing on top of the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _local_storage() -> LocalStorage:
    storage = get_storage()
    if not isinstance(storage, LocalStorage):
        raise Http404("Uploads go to object storage in this deployment.")
    return storage


class CappedFileUploadHandler(FileUploadHandler):
    """Streams the one `file` part to a temporary file and stops the upload past `max_bytes`."""

    def __init__(self, request: HttpRequest, *, max_bytes: int, directory: Path) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.directory = directory
        self.too_large = False
        self.extra_files = False
        self.path: Path | None = None
        self._handle = None

    def new_file(self, field_name, *args, **kwargs) -> None:
        super().new_file(field_name, *args, **kwargs)
        if field_name != FILE_FIELD or self.path is not None:
            self.extra_files = True
            raise SkipFile()
        fd, path = tempfile.mkstemp(dir=self.directory, prefix="upload-")
        self.path = Path(path)
        self._handle = os.fdopen(fd, "wb")

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if start + len(raw_data) > self.max_bytes:
            self.too_large = True
            self.cleanup()
            raise StopUpload(connection_reset=True)
        self._handle.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> UploadedFile:
        self._handle.close()
        return UploadedFile(
            file=None, name=self.file_name, content_type=self.content_type, size=file_size, charset=None
        )

    def upload_interrupted(self) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        if self._handle is not None:
            self._handle.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@csrf_exempt  # authorised by the signed URL alone; no cookies are involved
@require_POST
def upload(request: HttpRequest, token: str) -> HttpResponse:
    storage = _local_storage()
    try:
        grant = storage.upload_grant(token)
    except signing.SignatureExpired:
        return _error(403, "AccessDenied", "This upload URL has expired. Request a new upload.")
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return _error(403, "SignatureDoesNotMatch", "This upload URL is not valid.")
    too_large = _error(
        413, "EntityTooLarge", f"The file is larger than the {grant.max_bytes} bytes this upload allows."
    )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(400, "InvalidArgument", "Content-Length is not a number.")
    if declared > grant.max_bytes + FORM_OVERHEAD_BYTES:
        return too_large  # refused before the body is parsed

    handler = CappedFileUploadHandler(request, max_bytes=grant.max_bytes, directory=storage.tmp_dir)
    request.upload_handlers = [handler]
    try:
        try:
            fields, files = request.POST, request.FILES
        except MultiPartParserError:
            return _error(400, "MalformedPOSTRequest", "The body is not a valid multipart/form-data upload.")
        if handler.too_large:
            return too_large
        if fields.get("key") != grant.key:
            return _error(403, "AccessDenied", "The key field does not match this upload URL.")
        if fields.get("Content-Type") != grant.content_type:
            return _error(
                403, "AccessDenied", f"The Content-Type field must be {grant.content_type} for this upload."
            )
        if handler.extra_files or FILE_FIELD not in files or handler.path is None:
            return _error(400, "InvalidArgument", f"Send exactly one file, in the field '{FILE_FIELD}'.")
        if files[FILE_FIELD].size < 1:
            return _error(400, "EntityTooSmall", "The file is empty.")
        storage.accept_upload(handler.path, key=grant.key, content_type=grant.content_type)
        return HttpResponse(status=204)
    finally:
        handler.cleanup()


@require_safe
def download(request: HttpRequest, token: str) -> HttpResponse:
    storage = _local_storage()
    try:
        key, filename, expires_at = storage.download_grant(token)
    except signing.SignatureExpired:
        return _error(403, "AccessDenied", "This download URL has expired.")
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return _error(403, "SignatureDoesNotMatch", "This download URL is not valid.")
    info = storage.head(key)
    try:
        handle = storage.open(key)
    except ObjectNotFound:
        return _error(404, "NoSuchKey", "The file does not exist.")
    if info is None:  # deleted between the two calls
        with contextlib.suppress(OSError):
            handle.close()
        return _error(404, "NoSuchKey", "The file does not exist.")
    if isinstance(request, ASGIRequest):
        # FileResponse would be read whole into memory under ASGI; stream it in chunks instead.
        response = StreamingHttpResponse(_chunks(handle), content_type=info.content_type)
        response["Content-Length"] = str(info.size)
        if filename:
            response["Content-Disposition"] = content_disposition_header(True, filename)
    else:
        response = FileResponse(
            handle, content_type=info.content_type, as_attachment=bool(filename), filename=filename or ""
        )
    response["Cache-Control"] = f"private, max-age={max(math.floor(expires_at - time.time()), 0)}"
    return response


async def _chunks(handle, size: int = 256 * 1024):
    read = sync_to_async(handle.read, thread_sensitive=False)
    try:
        while chunk := await read(size):
            yield chunk
    finally:
        handle.close()
