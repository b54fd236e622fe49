"""The API's landing page at `/` (admin's "View site" link): where GraphiQL, the schema and health are.

The schema file and GraphiQL are listed and served only where introspection / the IDE are on (never in
production), so the page gives away no more than the API itself does.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

SCHEMA_FILE = settings.BASE_DIR / "graphql_schema" / "schema.graphql"


def api_landing(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "landing.html",
        {
            "graphiql": settings.GRAPHQL_IDE,
            "schema_file": settings.GRAPHQL_INTROSPECTION,
            "ws_url": request.build_absolute_uri("/graphql").replace("http", "ws", 1),
        },
    )


def schema_file(request: HttpRequest) -> HttpResponse:
    """The committed SDL the mobile apps generate code from (`make schema` writes it)."""
    if not settings.GRAPHQL_INTROSPECTION:
        raise Http404("The schema is not published here.")
    # Read whole (tens of KB): a file stream would be iterated synchronously under ASGI.
    return HttpResponse(SCHEMA_FILE.read_bytes(), content_type="text/plain; charset=utf-8")
