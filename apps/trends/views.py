"""Serves trend media from the local folder (embedded mode; S3 hands out its own URLs)."""

from __future__ import annotations

import mimetypes

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest

from .media import KEY_PREFIX, media_path


def trend_media(request: HttpRequest, path: str) -> HttpResponse:
    if settings.STORAGE_BACKEND != "local":
        raise Http404("trend media are served by the storage service")
    try:
        file = media_path(KEY_PREFIX + path)
    except ValueError:
        return HttpResponseBadRequest("not a trend media path")
    if not file.is_file():
        raise Http404("no such trend media")
    # Small files (covers, short previews): read whole, so ASGI needs no sync iterator.
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    response = HttpResponse(file.read_bytes(), content_type=content_type)
    response["Cache-Control"] = "public, max-age=3600"
    return response
