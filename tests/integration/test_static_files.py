"""The server's own pages and files, through the real URLconf and middleware (Django's test client, and the
live ASGI server): GraphiQL loads only this server's static files, which ServeStatic serves hashed,
compressed and cached, streamed under ASGI; the landing page admin's "View site" opens; admin dates in the
staff member's time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model

from apps.credits.services import credits_grant
from backend.staticfiles import GRAPHIQL_FILES
from tests.fixtures.static import needs_graphiql

pytestmark = pytest.mark.django_db

ASSET = re.compile(r'(?:src|href)="([^"]+\.(?:js|css))"')


@needs_graphiql
def test_graphiql_loads_its_scripts_and_styles_from_this_server(client):
    page = client.get("/graphql", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    html = page.content.decode()
    assets = ASSET.findall(html)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # no CDN, no other host
    assert len(assets) == 7 and all(url.startswith("/static/graphiql/") for url in assets), assets
    for url in assets:
        response = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
        assert response.status_code == 200, url
        assert response["Content-Encoding"] == "gzip"
        assert "immutable" in response["Cache-Control"]  # a hashed name: cached for good
    assert {url.split("/")[-1].split(".")[0] for url in assets} == {
        name.split(".")[0] for name in GRAPHIQL_FILES if not name.endswith(".map")
    }


# What Django says (and does) when a static file's response is a synchronous iterator under ASGI: it reads
# the whole file into memory on a worker thread before the first byte goes out.
BUFFERED = "StreamingHttpResponse must consume synchronous iterators"


def test_a_static_file_under_the_asgi_server_is_streamed_not_buffered(asgi_server, recwarn, settings):
    admin_css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', _login_page(asgi_server.url))
    assert admin_css, "the login page names admin's stylesheet by its hashed name"
    url = admin_css.group(1)
    on_disk = (Path(settings.STATIC_ROOT) / url.removeprefix("/static/")).read_bytes()
    plain = httpx.get(f"{asgi_server.url}{url}", headers={"Accept-Encoding": "identity"}, timeout=10)
    packed = httpx.get(f"{asgi_server.url}{url}", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert plain.status_code == packed.status_code == 200
    assert plain.content == on_disk and int(plain.headers["Content-Length"]) == len(on_disk)
    assert packed.headers["Content-Encoding"] == "gzip" and packed.content == on_disk  # httpx unpacks it
    assert "immutable" in packed.headers["Cache-Control"]
    # The server's log (its warnings) is silent about buffering: every byte came from an async iterator.
    assert [str(w.message) for w in recwarn if BUFFERED in str(w.message)] == []


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_a_missing_static_file_is_not_found_in_either_mode(client, settings, debug):
    settings.DEBUG = debug  # before the client's first request builds the middleware
    assert client.get("/static/admin/css/no-such-file.css").status_code == 404
    assert client.get("/static/graphiql/no-such-file.js").status_code == 404
    assert client.get("/static/admin/css/base.css").status_code == 200


def _login_page(base: str) -> str:
    page = httpx.get(f"{base}/admin/login/", timeout=10)
    assert page.status_code == 200
    return page.text


def test_the_landing_page_links_graphiql_the_schema_and_health(client):
    page = client.get("/")
    assert page.status_code == 200
    links = re.findall(r'<a href="([^"]+)"', page.content.decode())
    assert links == ["/graphql", "/schema.graphql", "/healthz", "/readyz", "/admin/"]
    schema = client.get("/schema.graphql")
    assert schema.status_code == 200 and schema["Content-Type"] == "text/plain; charset=utf-8"
    assert b"type Query" in schema.content


def test_without_introspection_neither_the_schema_file_nor_its_link_is_served(client, settings):
    settings.GRAPHQL_INTROSPECTION = False
    settings.GRAPHQL_IDE = False
    links = re.findall(r'<a href="([^"]+)"', client.get("/").content.decode())
    assert links == ["/healthz", "/readyz", "/admin/"]
    assert client.get("/schema.graphql").status_code == 404


@pytest.mark.parametrize(
    ("cookie", "shown"),
    [
        ("Asia/Tokyo", "Asia/Tokyo"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        ("Mars/Olympus_Mons", "UTC"),
        ("../../etc/passwd", "UTC"),
        ("", "UTC"),
    ],
)
def test_admin_shows_dates_in_the_zone_the_staff_browser_reports(client, cookie, shown):
    staff = get_user_model().objects.create_superuser("tz@example.com", "a-long-test-password-42")
    client.force_login(staff)
    client.cookies["staff_tz"] = cookie
    page = client.get("/admin/").content.decode()
    assert re.search(r'<div id="staff-time-zone"[^>]*>([^<]*)</div>', page).group(1) == shown


def test_a_date_in_admin_is_the_staff_members_local_time(client):
    staff = get_user_model().objects.create_superuser("tz@example.com", "a-long-test-password-42")
    get_user_model().objects.filter(pk=staff.pk).update(date_joined=datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    client.force_login(staff)
    client.cookies["staff_tz"] = "Asia/Tokyo"
    page = client.get(f"/admin/accounts/user/{staff.pk}/change/").content.decode()
    assert "Jan. 1, 2026, 9:30 a.m." in page  # 00:30 UTC is 09:30 in Tokyo


def test_long_admin_lists_come_in_pages_of_50(client):
    staff = get_user_model().objects.create_superuser("pages@example.com", "a-long-test-password-42")
    for n in range(51):
        credits_grant(user=staff, amount=1, reason=f"grant {n}")
    client.force_login(staff)
    first = client.get("/admin/credits/creditentry/").content.decode()
    assert len(re.findall(r'<tr><t[dh] class="field-created_at', first)) == 50
    second = client.get("/admin/credits/creditentry/?p=2").content.decode()
    assert "grant 0" in second and "grant 0" not in first  # newest first; the oldest on page 2
