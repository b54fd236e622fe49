"""The storage contract, run against both backends: a local folder and S3 (moto's server over HTTP)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from apps.storage.backends import (
    LocalStorage,
    ObjectNotFound,
    ObjectTooLarge,
    S3Storage,
    get_storage,
)


@pytest.fixture(params=["local", "s3"])
def storage(request):
    request.getfixturevalue("s3_bucket" if request.param == "s3" else "local_storage")
    return get_storage()


def test_write_head_read_round_trip(storage):
    storage.write("uploads/u1/a", b"hello bytes", content_type="image/png")
    info = storage.head("uploads/u1/a")
    assert (info.size, info.content_type) == (11, "image/png")
    assert storage.read("uploads/u1/a", max_bytes=11) == b"hello bytes"
    assert storage.head("uploads/u1/missing") is None


def test_read_never_returns_more_than_the_cap(storage):
    storage.write("uploads/u1/big", b"x" * 100, content_type="image/jpeg")
    with pytest.raises(ObjectTooLarge):
        storage.read("uploads/u1/big", max_bytes=99)
    assert storage.read("uploads/u1/big", max_bytes=100) == b"x" * 100
    with pytest.raises(ObjectNotFound):
        storage.read("uploads/u1/nothing", max_bytes=100)


def test_list_keys_and_delete_prefix_stay_inside_the_prefix(storage):
    for key in ("uploads/u1/a", "uploads/u1/incoming/b", "uploads/u10/c", "uploads/u2/d"):
        storage.write(key, b"1", content_type="image/png")
    assert storage.list_keys("uploads/u1/") == ["uploads/u1/a", "uploads/u1/incoming/b"]
    assert storage.list_keys("uploads/u1/inc") == ["uploads/u1/incoming/b"]
    assert storage.list_keys("uploads/u1") == ["uploads/u1/a", "uploads/u1/incoming/b", "uploads/u10/c"]
    assert storage.delete_prefix("uploads/u1/") == 2
    assert storage.list_keys("uploads/") == ["uploads/u10/c", "uploads/u2/d"]


def test_delete_is_permanent(storage):
    storage.write("uploads/u1/a", b"one", content_type="image/png")
    storage.write("uploads/u1/a", b"two", content_type="image/png")
    storage.write("uploads/u1/b", b"keep", content_type="image/png")
    assert storage.delete("uploads/u1/a") >= 1
    assert storage.head("uploads/u1/a") is None
    assert storage.list_keys("uploads/u1/") == ["uploads/u1/b"]
    assert storage.delete("uploads/u1/a") == 0


def test_delete_on_s3_removes_every_version_and_delete_marker(s3_bucket):
    storage = get_storage()
    storage.write("uploads/u1/a", b"one", content_type="image/png")
    storage.write("uploads/u1/a", b"two", content_type="image/png")
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key="uploads/u1/a")  # only adds a marker
    assert len(s3_bucket.versions("uploads/u1/a")) == 3
    # A key with nothing but a delete marker left still counts: erasure must find it.
    assert storage.head("uploads/u1/a") is None
    assert storage.list_keys("uploads/u1/") == ["uploads/u1/a"]
    assert storage.delete("uploads/u1/a") == 3
    assert s3_bucket.versions() == []
    assert storage.list_keys("uploads/") == []


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "uploads/../../x", "/etc/passwd", ".meta/uploads/a", "a//b", "a/", "", "a b"]
)
def test_keys_that_could_escape_or_hide_are_refused(storage, key):
    with pytest.raises(ValueError):
        storage.write(key, b"x", content_type="image/png")
    with pytest.raises(ValueError):
        storage.head(key)


def test_local_objects_live_under_media_root_only(local_storage):
    storage = get_storage()
    storage.write("uploads/u1/a", b"x", content_type="image/png")
    assert (Path(local_storage) / "uploads/u1/a").read_bytes() == b"x"
    assert storage.delete("uploads/u1/a") == 1
    assert not (Path(local_storage) / "uploads").exists()  # empty folders are pruned


def test_get_storage_follows_settings_changes(s3_bucket, settings):
    s3 = get_storage()
    assert isinstance(s3, S3Storage) and s3.bucket == s3_bucket.name
    assert get_storage() is s3  # the boto3 client is reused
    settings.S3_BUCKET = "another-bucket"
    assert get_storage().bucket == "another-bucket"
    settings.STORAGE_BACKEND = "local"
    local = get_storage()
    assert isinstance(local, LocalStorage) and local.root == Path(settings.MEDIA_ROOT)


def test_check_fails_for_a_missing_bucket(s3_bucket, settings):
    get_storage().check()
    settings.S3_BUCKET = "no-such-bucket"
    with pytest.raises(Exception, match="404"):
        get_storage().check()


# --- Download URLs expire ------------------------------------------------------------------------


def test_s3_download_url_is_a_presigned_get_that_expires(s3_bucket, settings):
    settings.DOWNLOAD_URL_TTL_SECONDS = 600
    storage = get_storage()
    storage.write("uploads/u1/a", b"picture", content_type="image/jpeg")
    url = storage.download_url("uploads/u1/a")
    query = parse_qs(urlparse(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    signed_at = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
    assert abs(signed_at - time.time()) < 60
    response = httpx.get(url)
    assert (response.status_code, response.content) == (200, b"picture")
    # A caller may ask for less, never for more than the configured lifetime.
    assert parse_qs(urlparse(storage.download_url("uploads/u1/a", expires_in=60)).query)["X-Amz-Expires"] == [
        "60"
    ]
    longer = storage.download_url("uploads/u1/a", expires_in=7 * 24 * 3600)
    assert parse_qs(urlparse(longer).query)["X-Amz-Expires"] == ["600"]


def test_local_download_url_serves_the_file_until_it_expires(local_storage, storage_clock, settings, client):
    storage = get_storage()
    storage.write("uploads/u1/a", b"picture", content_type="image/jpeg")
    url = storage.download_url("uploads/u1/a")
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content) == b"picture"

    settings.DOWNLOAD_URL_TTL_SECONDS = 1
    short = storage.download_url("uploads/u1/a")
    assert client.get(short).status_code == 200
    storage_clock.advance(1.05)
    expired = client.get(short)
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "AccessDenied"


def test_local_download_url_cannot_be_altered(local_storage, client):
    storage = get_storage()
    storage.write("uploads/u1/a", b"mine", content_type="image/jpeg")
    storage.write("uploads/u2/b", b"theirs", content_type="image/jpeg")
    url = storage.download_url("uploads/u1/a")
    token = url.rsplit("/", 1)[1]
    payload, rest = token.split(":", 1)
    other = storage.download_url("uploads/u2/b").rsplit("/", 1)[1].split(":", 1)[0]
    forged = url.replace(token, f"{other}:{rest}")
    assert client.get(forged).status_code == 403
    assert client.get(url[:-2] + ("AA" if not url.endswith("AA") else "BB")).status_code == 403


def test_local_download_of_a_deleted_file_is_404(local_storage, client):
    storage = get_storage()
    storage.write("uploads/u1/a", b"x", content_type="image/jpeg")
    url = storage.download_url("uploads/u1/a")
    storage.delete("uploads/u1/a")
    assert client.get(url).status_code == 404


def test_storage_routes_are_off_in_s3_mode(s3_bucket, settings, client):
    settings.STORAGE_BACKEND = "local"
    url = get_storage().download_url("uploads/u1/a")
    settings.STORAGE_BACKEND = "s3"
    assert client.get(url).status_code == 404


def test_local_urls_use_public_base_url_when_set(local_storage, settings):
    settings.PUBLIC_BASE_URL = "https://api.example.com/"
    storage = get_storage()
    target = storage.presign_upload(
        key="incoming/u1/a", content_type="image/png", max_bytes=10, expires_in=60
    )
    assert target.url.startswith("https://api.example.com/storage/upload/")
    assert storage.download_url("uploads/u1/a").startswith("https://api.example.com/storage/download/")
