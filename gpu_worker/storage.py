"""Inputs and outputs by storage key, without Django: a local folder or an S3 bucket.

The environment variables are the backend's (backend/settings.py): STORAGE_BACKEND (`local` | `s3`),
MEDIA_ROOT (else VAR_DIR/media, else ./var/media), S3_BUCKET, S3_ENDPOINT_URL, S3_REGION. The local
layout is the one apps/storage reads: the object at MEDIA_ROOT/<key> and its content type in
MEDIA_ROOT/.meta/<key>.json, written through MEDIA_ROOT/.tmp so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from gpu_worker.contract import KEY_PATTERN

DEFAULT_MAX_READ_BYTES = 512 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent


class StorageError(Exception):
    """The storage failed or refused an operation."""


class MissingObject(StorageError):
    """No object under that key."""


class ObjectTooLarge(StorageError):
    pass


def validate_key(key: str) -> str:
    if not isinstance(key, str) or len(key) > 512 or not KEY_PATTERN.match(key):
        raise ValueError(f"not a valid storage key: {key!r}")
    return key


class Storage(Protocol):
    name: str

    def read(self, key: str, *, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> bytes: ...

    def write(self, key: str, data: bytes, *, content_type: str) -> None: ...

    def write_file(self, key: str, path: Path, *, content_type: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Removes an object; nothing happens when there is none."""
        ...


class LocalStorage:
    name = "local"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _tmp_dir(self) -> Path:
        path = self.root / ".tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write_meta(self, key: str, content_type: str) -> None:
        meta = self.root / ".meta" / f"{key}.json"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"content_type": content_type}))

    def read(self, key: str, *, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> bytes:
        try:
            with self._path(key).open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError):
            raise MissingObject(key) from None
        if len(data) > max_bytes:
            raise ObjectTooLarge(key)
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        (self.root / ".meta" / f"{key}.json").unlink(missing_ok=True)

    def write(self, key: str, data: bytes, *, content_type: str) -> None:
        fd, temp = tempfile.mkstemp(dir=self._tmp_dir(), prefix="gpu-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        self._place(key, Path(temp), content_type)

    def write_file(self, key: str, path: Path, *, content_type: str) -> int:
        fd, temp = tempfile.mkstemp(dir=self._tmp_dir(), prefix="gpu-")
        with os.fdopen(fd, "wb") as handle, Path(path).open("rb") as source:
            while chunk := source.read(1024 * 1024):
                handle.write(chunk)
        self._place(key, Path(temp), content_type)
        return Path(path).stat().st_size

    def _place(self, key: str, temp: Path, content_type: str) -> None:
        try:
            target = self._path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._write_meta(key, content_type)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


class S3Storage:
    """A private S3 bucket (SigV4, path-style addressing so S3-compatible servers and moto work).
    Credentials come from boto3's usual chain."""

    name = "s3"

    def __init__(self, *, bucket: str, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise StorageError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        self.bucket = bucket
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 5, "mode": "standard"},
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

    def read(self, key: str, *, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except Exception as exc:
            if self._missing(exc):
                raise MissingObject(key) from None
            raise
        with response["Body"] as body:
            data = body.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ObjectTooLarge(key)
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except Exception as exc:
            if self._missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def write(self, key: str, data: bytes, *, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data, ContentType=content_type)

    def write_file(self, key: str, path: Path, *, content_type: str) -> int:
        # upload_file switches to a multipart upload for large files and retries parts.
        self.client.upload_file(
            str(path), self.bucket, validate_key(key), ExtraArgs={"ContentType": content_type}
        )
        return Path(path).stat().st_size


def default_media_root(environ: Mapping[str, str]) -> Path:
    if environ.get("MEDIA_ROOT"):
        return Path(environ["MEDIA_ROOT"])
    return Path(environ.get("VAR_DIR") or REPO_ROOT / "var") / "media"


def storage_from_env(environ: Mapping[str, str] | None = None) -> Storage:
    environ = os.environ if environ is None else environ
    backend = (environ.get("STORAGE_BACKEND") or "local").strip().lower()
    if backend == "local":
        return LocalStorage(default_media_root(environ))
    if backend == "s3":
        return S3Storage(
            bucket=environ.get("S3_BUCKET", ""),
            endpoint_url=environ.get("S3_ENDPOINT_URL") or None,
            region=environ.get("S3_REGION") or "us-east-1",
        )
    raise StorageError(f"unknown STORAGE_BACKEND {backend!r}; expected 'local' or 's3'")
