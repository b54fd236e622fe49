"""requestUploads for a Soul ID: only the caller's Soul ID, and only with a stored consent record."""

from __future__ import annotations

import uuid

import pytest
from strawberry.relay import to_base64

from apps.characters.models import Character, ConsentRecord
from apps.storage.models import Upload

pytestmark = [pytest.mark.django_db, pytest.mark.services, pytest.mark.usefixtures("local_storage")]

REQUEST = """
mutation ($count: Int!, $contentType: String!, $characterId: ID) {
  requestUploads(input: {count: $count, contentType: $contentType, characterId: $characterId}) {
    __typename
    ... on UploadsPayload { uploads { uploadId upload { status } } }
    ... on Error { code message }
    ... on NotFound { field }
    ... on ConsentRequired { field }
  }
}
"""

CREATE = """
mutation { createCharacter(input: {name: "Me", consent: true}) {
  __typename ... on CharacterPayload { character { id } } } }
"""


def _request(gql, token: str, character_id: str | None, count: int = 2) -> dict:
    variables = {"count": count, "contentType": "image/jpeg", "characterId": character_id}
    return gql(REQUEST, variables, token=token)["data"]["requestUploads"]


def _character(gql, token: str) -> str:
    result = gql(CREATE, token=token)["data"]["createCharacter"]
    assert result["__typename"] == "CharacterPayload", result
    return result["character"]["id"]


def test_uploads_for_an_own_soul_id_with_consent(gql, sign_up):
    token = sign_up()["accessToken"]
    character_id = _character(gql, token)
    result = _request(gql, token, character_id)
    assert result["__typename"] == "UploadsPayload"
    assert [target["upload"]["status"] for target in result["uploads"]] == ["PENDING", "PENDING"]
    assert Upload.objects.count() == 2


def test_uploads_without_a_soul_id_still_work(gql, sign_up):
    token = sign_up()["accessToken"]
    result = _request(gql, token, None, count=1)
    assert result["__typename"] == "UploadsPayload"
    assert Upload.objects.count() == 1


def test_another_users_soul_id_is_not_found(gql, sign_up):
    owner = sign_up(email="owner@example.com")["accessToken"]
    character_id = _character(gql, owner)
    other = sign_up(email="other@example.com")["accessToken"]
    result = _request(gql, other, character_id)
    assert result == {
        "__typename": "NotFound",
        "code": "NOT_FOUND",
        "message": "This Soul ID does not exist.",
        "field": "characterId",
    }
    assert Upload.objects.count() == 0


@pytest.mark.parametrize(
    "character_id",
    [to_base64("Character", uuid.uuid4()), "not-an-id", to_base64("Upload", uuid.uuid4())],
)
def test_missing_or_malformed_soul_id_is_not_found(gql, sign_up, character_id):
    token = sign_up()["accessToken"]
    result = _request(gql, token, character_id)
    assert (result["__typename"], result["code"], result["field"]) == ("NotFound", "NOT_FOUND", "characterId")
    assert Upload.objects.count() == 0


def test_soul_id_without_a_consent_record_is_refused(gql, sign_up):
    token = sign_up()["accessToken"]
    character_id = _character(gql, token)
    ConsentRecord.objects.all().delete()
    result = _request(gql, token, character_id)
    assert (result["__typename"], result["code"], result["field"]) == (
        "ConsentRequired",
        "CONSENT_REQUIRED",
        "characterId",
    )
    assert Upload.objects.count() == 0


def test_soul_id_with_withdrawn_consent_is_refused(gql, sign_up):
    token = sign_up()["accessToken"]
    character_id = _character(gql, token)
    character = Character.objects.get()
    assert ConsentRecord.objects.filter(character=character).update(withdrawn_at="2026-01-01T00:00:00Z") == 1
    result = _request(gql, token, character_id)
    assert result["__typename"] == "ConsentRequired"
    assert Upload.objects.count() == 0
