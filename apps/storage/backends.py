"""Object storage: a local folder (the embedded mode) or an S3 bucket (services mode).

Both backends keep the same small interface, so the rest of the code never asks which one it has:

- `check()`: raises when the storage cannot be used (/readyz calls it).
- `presign_upload()`: a target the app sends one file to with a plain multipart POST: S3's presigned
  POST (the policy pins the key, the content type, a size range and an expiry), or the same shape
  served by Django (`apps/storage/views.py`) with the policy in a signed, expiring URL.
- `head()`, `read()` (capped), `write()`, `delete()` (every version and delete marker on S3),
  `delete_prefix()`, `list_keys()` (every key that still has a version or marker under a prefix).
- `download_url()`: an expiring URL (presigned GET, or a signed Django URL).

Keys are chosen by the server and look like `uploads/<user uuid>/<upload uuid>`; a key that does not
match `KEY_PATTERN` is refused, so a key can never climb out of the media folder.
"""

from __future__ import annotations

import abc
import functools
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

# Segments start with a letter or digit (so no `..`, no hidden files) and hold only safe characters.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*(/[A-Za-z0-9][A-Za-z0-9._=-]*)*$")
KEY_MAX_LENGTH = 512
UPLOAD_TTL_MAX_SECONDS = 15 * 60  # presigned uploads never live longer than this
FILE_FIELD = "file"  # the multipart field that carries the file; S3 requires it to be the last one

_UPLOAD_SALT = "apps.storage.upload"
_DOWNLOAD_SALT = "apps.storage.download"


class StorageError(Exception):
    """The storage failed or refused an operation."""


class ObjectNotFound(StorageError):
    pass


class ObjectTooLarge(StorageError):
    pass


@dataclass(frozen=True)
class UploadTarget:
    """Where and how the app sends one file: a multipart POST of `fields` (in order), then the file."""

    url: str
    method: str
    fields: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    file_field: str
    expires_at: datetime
    max_bytes: int


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


def validate_key(key: str) -> str:
    if not isinstance(key, str) or len(key) > KEY_MAX_LENGTH or not KEY_PATTERN.match(key):
        raise ValueError(f"not a valid storage key: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix is a key, or a key followed by `/`."""
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def safe_filename(filename: str) -> str:
    """A download file name that needs no quoting in a Content-Disposition header."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", filename)[:100] or "download"


def _upload_ttl(expires_in: int) -> int:
    return max(1, min(int(expires_in), UPLOAD_TTL_MAX_SECONDS))


def _download_ttl(expires_in: int | None) -> int:
    """Callers may shorten the configured download lifetime, never lengthen it."""
    configured = settings.DOWNLOAD_URL_TTL_SECONDS
    return max(1, min(int(expires_in or configured), configured))


class Storage(abc.ABC):
    name: str

    @abc.abstractmethod
    def check(self) -> None: ...

    @abc.abstractmethod
    def presign_upload(
        self, *, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> UploadTarget: ...

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and content type of an object, or None when there is none."""

    @abc.abstractmethod
    def read(self, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; ObjectTooLarge past `max_bytes` (never reads more than one byte over)."""

    @abc.abstractmethod
    def write(self, key: str, data: bytes, *, content_type: str) -> None: ...

    @abc.abstractmethod
    def delete(self, key: str) -> int:
        """Removes the object for good (on S3: every version and delete marker). Returns how many."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Removes every object under a prefix for good (for erasure). Returns how many were removed."""

    @abc.abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys under a prefix that still hold anything (on S3: any version or delete marker)."""

    @abc.abstractmethod
    def download_url(self, key: str, *, expires_in: int | None = None, filename: str | None = None) -> str:
        """A URL that serves the object until it expires (at most DOWNLOAD_URL_TTL_SECONDS)."""


# --- Local folder -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadGrant:
    """What a signed local upload URL allows: one file to one key, of one content type, up to a size."""

    key: str
    content_type: str
    max_bytes: int
    expires_at: float


class LocalStorage(Storage):
    """Objects are files under MEDIA_ROOT; content types live in a `.meta` tree beside them.

    Uploads and downloads go through Django (`apps/storage/views.py`) with URLs signed by
    `django.core.signing` (SECRET_KEY) that carry their own expiry. URLs are absolute when
    PUBLIC_BASE_URL is set, otherwise paths that the GraphQL layer resolves against the request.
    """

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def meta_root(self) -> Path:
        return self.root / ".meta"

    @property
    def tmp_dir(self) -> Path:
        path = self.root / ".tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.meta_root / f"{validate_key(key)}.json"

    def _url(self, path: str) -> str:
        return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{path}"

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")

    # Uploads

    def presign_upload(self, *, key: str, content_type: str, max_bytes: int, expires_in: int) -> UploadTarget:
        validate_key(key)
        expires_at = int(time.time()) + _upload_ttl(expires_in)
        token = signing.dumps(
            {"k": key, "ct": content_type, "max": int(max_bytes), "exp": expires_at}, salt=_UPLOAD_SALT
        )
        return UploadTarget(
            url=self._url(reverse("storage-upload", args=[token])),
            method="POST",
            fields=[("key", key), ("Content-Type", content_type)],
            headers=[],
            file_field=FILE_FIELD,
            expires_at=datetime.fromtimestamp(expires_at, tz=UTC),
            max_bytes=int(max_bytes),
        )

    def upload_grant(self, token: str) -> UploadGrant:
        """The grant in a signed upload URL; signing.BadSignature when forged, SignatureExpired when old."""
        data = signing.loads(token, salt=_UPLOAD_SALT)
        if time.time() >= data["exp"]:
            raise signing.SignatureExpired("upload URL expired")
        return UploadGrant(
            key=validate_key(data["k"]),
            content_type=data["ct"],
            max_bytes=int(data["max"]),
            expires_at=data["exp"],
        )

    def accept_upload(self, temp_path: Path, *, key: str, content_type: str) -> None:
        """Moves a received file (already in `tmp_dir`, same filesystem) into place atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_meta(key, content_type)
        os.replace(temp_path, path)

    # Objects

    def _write_meta(self, key: str, content_type: str) -> None:
        meta = self._meta_path(key)
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"content_type": content_type}))

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            content_type = json.loads(self._meta_path(key).read_text())["content_type"]
        except (FileNotFoundError, ValueError, KeyError):
            content_type = "application/octet-stream"
        return ObjectInfo(key=key, size=size, content_type=content_type)

    def open(self, key: str):
        """A binary file object for the Django download view."""
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def read(self, key: str, *, max_bytes: int) -> bytes:
        with self.open(key) as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ObjectTooLarge(key)
        return data

    def write(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.tmp_dir, prefix="write-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            self._write_meta(key, content_type)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> int:
        path = self._path(key)
        self._meta_path(key).unlink(missing_ok=True)
        try:
            path.unlink()
        except FileNotFoundError:
            return 0
        self._prune(path.parent)
        return 1

    def _prune(self, directory: Path) -> None:
        """Removes empty folders left by deletes, up to the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def delete_prefix(self, prefix: str) -> int:
        return sum(self.delete(key) for key in self.list_keys(prefix))

    def _walk(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not start.is_dir():
            return
        for directory, folders, files in os.walk(start):
            folders[:] = [name for name in folders if not name.startswith(".")]
            relative = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    yield key

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(self._walk(prefix))

    # Downloads

    def download_url(self, key: str, *, expires_in: int | None = None, filename: str | None = None) -> str:
        validate_key(key)
        payload = {"k": key, "exp": int(time.time()) + _download_ttl(expires_in)}
        if filename:
            payload["fn"] = safe_filename(filename)
        token = signing.dumps(payload, salt=_DOWNLOAD_SALT)
        return self._url(reverse("storage-download", args=[token]))

    def download_grant(self, token: str) -> tuple[str, str | None, float]:
        """(key, filename, expires at) of a signed download URL; raises like `upload_grant`."""
        data = signing.loads(token, salt=_DOWNLOAD_SALT)
        if time.time() >= data["exp"]:
            raise signing.SignatureExpired("download URL expired")
        return validate_key(data["k"]), data.get("fn"), data["exp"]


# --- S3 ---------------------------------------------------------------------------------------------


class S3Storage(Storage):
    """A private S3 bucket through boto3 (SigV4, path-style addressing for S3-compatible servers).

    Credentials come from boto3's usual chain (environment, instance or task role). Objects are never
    given an ACL, so they stay private; presigned POST policies list every allowed form field, so a
    client cannot add one (an `acl`, another key) either.
    """

    name = "s3"

    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str) -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise ImproperlyConfigured("STORAGE_BACKEND=s3 needs S3_BUCKET")
        self.bucket = bucket
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    @staticmethod
    def _missing(exc: Exception) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in {
            "404",
            "NoSuchKey",
            "NotFound",
        }

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    def presign_upload(self, *, key: str, content_type: str, max_bytes: int, expires_in: int) -> UploadTarget:
        validate_key(key)
        ttl = _upload_ttl(expires_in)
        # Never earlier than the policy's own expiration (botocore truncates its clock to the second).
        expires_at = datetime.fromtimestamp(math.ceil(time.time()) + ttl, tz=UTC)
        # boto3 adds the bucket and the exact key to the conditions itself; a field in `Fields` is not
        # a condition by itself, so Content-Type gets its own.
        post = self.client.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, int(max_bytes)]],
            ExpiresIn=ttl,
        )
        return UploadTarget(
            url=post["url"],
            method="POST",
            fields=list(post["fields"].items()),
            headers=[],
            file_field=FILE_FIELD,
            expires_at=expires_at,
            max_bytes=int(max_bytes),
        )

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            content_type=response.get("ContentType") or "application/octet-stream",
        )

    def read(self, key: str, *, max_bytes: int) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except Exception as exc:
            if self._missing(exc):
                raise ObjectNotFound(key) from None
            raise
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > max_bytes:
                raise ObjectTooLarge(key)
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise ObjectTooLarge(key)
        return data

    def write(self, key: str, data: bytes, *, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data, ContentType=content_type)

    def _versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, version id) of every version and delete marker under a prefix."""
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                yield item["Key"], item["VersionId"]

    def _delete_versions(self, versions: list[tuple[str, str]]) -> int:
        for start in range(0, len(versions), 1000):
            batch = versions[start : start + 1000]
            response = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in batch], "Quiet": True},
            )
            if response.get("Errors"):
                raise StorageError(f"S3 refused to delete {len(response['Errors'])} object versions")
        return len(versions)

    def delete(self, key: str) -> int:
        validate_key(key)
        return self._delete_versions([item for item in self._versions(key) if item[0] == key])

    def delete_prefix(self, prefix: str) -> int:
        return self._delete_versions(list(self._versions(validate_prefix(prefix))))

    def list_keys(self, prefix: str) -> list[str]:
        return sorted({key for key, _ in self._versions(validate_prefix(prefix))})

    def download_url(self, key: str, *, expires_in: int | None = None, filename: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": validate_key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{safe_filename(filename)}"'
        return self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=_download_ttl(expires_in)
        )


@functools.lru_cache(maxsize=8)
def _s3_storage(bucket: str, endpoint_url: str | None, region: str, access_key_id: str) -> S3Storage:
    # `access_key_id` only keys the cache: a process whose credentials change gets a new client.
    return S3Storage(bucket=bucket, endpoint_url=endpoint_url, region=region)


def get_storage() -> Storage:
    """The configured backend. Follows settings changes (tests override them); S3 clients are cached."""
    backend = settings.STORAGE_BACKEND
    if backend == "s3":
        return _s3_storage(
            settings.S3_BUCKET,
            settings.S3_ENDPOINT_URL,
            settings.S3_REGION,
            os.environ.get("AWS_ACCESS_KEY_ID", ""),
        )
    if backend == "local":
        return LocalStorage(Path(settings.MEDIA_ROOT))
    raise ImproperlyConfigured(f"STORAGE_BACKEND must be 'local' or 's3', not {backend!r}")
