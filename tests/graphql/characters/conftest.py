"""Soul ID test helpers: a signed-up user with verified uploads of the fixture photos, and the GraphQL
operations. Uploads are made directly as verified Upload rows whose bytes are in storage (what
completeUpload leaves behind), except in the test that goes through requestUploads/completeUpload."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.storage.backends import get_storage
from apps.storage.models import Upload, UploadStatus
from tests.apps.storage.conftest import _moto_client, local_storage, moto_endpoint, s3_bucket  # noqa: F401

FRAGMENT = """
fragment C on Character {
  id name status acceptedPhotoCount minPhotos maxPhotos
  photos { id status reasons message }
}"""

CREATE = (
    """
mutation ($name: String!, $consent: Boolean!) {
  createCharacter(input: {name: $name, consent: $consent}) {
    __typename
    ... on CharacterPayload { character { ...C } }
    ... on Error { code message }
  }
}"""
    + FRAGMENT
)

ADD_PHOTOS = (
    """
mutation ($id: ID!, $uploads: [ID!]!) {
  addCharacterPhotos(characterId: $id, uploadIds: $uploads) {
    __typename
    ... on CharacterPayload { character { ...C } }
    ... on TooManyPhotos { maximum count }
    ... on NotFound { field }
    ... on UploadInvalid { reason }
    ... on Error { code message }
  }
}"""
    + FRAGMENT
)

REMOVE_PHOTO = (
    """
mutation ($id: ID!, $photo: ID!) {
  removeCharacterPhoto(characterId: $id, photoId: $photo) {
    __typename
    ... on CharacterPayload { character { ...C } }
    ... on Error { code message }
  }
}"""
    + FRAGMENT
)

DELETE = """
mutation ($id: ID!) {
  deleteCharacter(characterId: $id) {
    __typename
    ... on DeletePayload { id }
    ... on Error { code message }
  }
}"""

CHARACTER = "query ($id: ID!) { character(id: $id) { ...C } }" + FRAGMENT
CHARACTERS = "{ characters { ...C } }" + FRAGMENT

SUBSCRIBE = "subscription ($id: ID!) { characterUpdated(id: $id) { sequence character { ...C } } }" + FRAGMENT


def verified_upload(user: User, data: bytes, content_type: str = "image/jpeg") -> Upload:
    """A verified upload of `data`, stored at its key, as completeUpload leaves it."""
    upload_id = uuid.uuid4()
    upload = Upload.objects.create(
        id=upload_id,
        user=user,
        key=f"uploads/{user.id}/{upload_id}",
        incoming_key=f"incoming/{user.id}/{upload_id}",
        content_type=content_type,
        max_bytes=15 * 1024 * 1024,
        expires_at=timezone.now() + dt.timedelta(minutes=15),
        status=UploadStatus.VERIFIED,
        bytes=len(data),
        width=1,
        height=1,
        format="JPEG",
        verified_at=timezone.now(),
    )
    get_storage().write(upload.key, data, content_type=content_type)
    return upload


class Account:
    def __init__(self, gql, payload: dict) -> None:
        self.gql = gql
        self.token = payload["accessToken"]
        self.user = User.objects.get(email=payload["user"]["email"])

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        return self.gql(query, variables, token=self.token)

    def create(self, name: str = "Me", consent: bool = True) -> dict:
        return self(CREATE, {"name": name, "consent": consent})["data"]["createCharacter"]

    def character_id(self, name: str = "Me") -> str:
        result = self.create(name)
        assert result["__typename"] == "CharacterPayload", result
        return result["character"]["id"]

    def uploads(self, photos: list[bytes]) -> list[str]:
        return [str(verified_upload(self.user, data).pk) for data in photos]

    def add(self, character_id: str, upload_ids: list[str]) -> dict:
        return self(ADD_PHOTOS, {"id": character_id, "uploads": upload_ids})["data"]["addCharacterPhotos"]

    def character(self, character_id: str) -> Any:
        return self(CHARACTER, {"id": character_id})

    def wait_checked(self, character_id: str, timeout: float = 90) -> dict:
        """Polls until no photo is pending (the worker checks them)."""
        deadline = time.monotonic() + timeout
        while True:
            character = self.character(character_id)["data"]["character"]
            if character["status"] != "VALIDATING":
                return character
            assert time.monotonic() < deadline, character
            time.sleep(0.2)


@pytest.fixture
def account(gql, sign_up):
    def _account() -> Account:
        return Account(gql, sign_up())

    return _account


def _load_make_photos():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "fixtures" / "photos" / "make_photos.py"
    spec = importlib.util.spec_from_file_location("make_photos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_photos = _load_make_photos()


@pytest.fixture(params=["local", "s3"])
def backend(request) -> str:
    """Runs a test once with each storage backend (S3: moto's server, a versioned bucket)."""
    request.getfixturevalue("s3_bucket" if request.param == "s3" else "local_storage")
    return request.param
