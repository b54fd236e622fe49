"""One node-id parser (graphql_schema.toolkit.node_pk) behind every ID argument: a malformed ID, or the
ID of another type, is the NOT_FOUND an ID of nothing gets (typed in a mutation's result, top-level in a
query), never an unexpected error."""

from __future__ import annotations

import pytest
from strawberry.relay import to_base64

from tests.graphql.generations.stack import LiveUser

pytestmark = pytest.mark.django_db

BAD_IDS = [
    "nonsense",
    "",
    to_base64("Generation", "not-a-uuid"),
    to_base64("Trend", "x"),
    "%%%==",
    to_base64("ShotPlan", "d6c3f2f4-3c43-4b0e-9a43-2f1d5b8f3a11"),  # a type of the schema that is no Node
    to_base64("NoSuchType", "1"),
]

# (operation up to the selection of its result, the field a NotFound names, whether "" means "left out")
MUTATIONS = [
    ("mutation($id: ID!) { cancelGeneration(id: $id)", "id", False),
    ("mutation($id: ID!) { deleteGeneration(id: $id)", "id", False),
    ("mutation($id: ID!) { recordShare(generationId: $id)", "id", False),
    ("mutation($id: ID!) { completeUpload(uploadId: $id)", "uploadId", False),
    ("mutation($id: ID!) { trainCharacter(characterId: $id)", "characterId", False),
    ("mutation($id: ID!) { deleteCharacter(characterId: $id)", "characterId", False),
    ("mutation($id: ID!) { addCharacterPhotos(characterId: $id, uploadIds: [])", "characterId", False),
    (
        'mutation($id: ID!) { requestUploads(input: {count: 1, contentType: "image/jpeg", characterId: $id})',
        "characterId",
        False,
    ),
    (
        'mutation($id: ID!) { createGeneration(input: {prompt: "a", characterId: $id, idempotencyKey: "k"})',
        "characterId",
        True,
    ),
    (
        'mutation($id: ID) { createGeneration(input: {prompt: "a", photoUploadId: $id, idempotencyKey: "j"})',
        "photoUploadId",
        True,
    ),
    ('query($id: ID!) { generationQuote(input: {prompt: "a walk", characterId: $id})', "characterId", True),
]
NOT_FOUND_SELECTION = " { __typename ... on NotFound { code field } } }"

QUERIES = [
    "query($id: ID!) { generation(id: $id) { id } }",
    "query($id: ID!) { character(id: $id) { id } }",
]


@pytest.fixture
def token(sign_up) -> str:
    return sign_up()["accessToken"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(("operation", "field", "empty_is_absent"), MUTATIONS)
def test_a_bad_id_in_a_mutation_is_a_typed_not_found(gql, token, operation, field, empty_is_absent, bad_id):
    if bad_id == "" and empty_is_absent:
        pytest.skip("an empty optional ID in an input means the field was left out")
    response = gql(operation + NOT_FOUND_SELECTION, {"id": bad_id}, token=token)
    assert "errors" not in response, response
    (result,) = response["data"].values()
    assert result == {"__typename": "NotFound", "code": "NOT_FOUND", "field": field}


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize("query", QUERIES)
def test_a_bad_id_in_a_query_is_a_top_level_not_found(gql, token, query, bad_id):
    response = gql(query, {"id": bad_id}, token=token)
    (value,) = response["data"].values()
    assert value is None
    assert [error["extensions"]["code"] for error in response["errors"]] == ["NOT_FOUND"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_a_bad_global_id_in_node_is_no_unexpected_error(gql, token, bad_id):
    response = gql("query($id: ID!) { node(id: $id) { id } }", {"id": bad_id}, token=token)
    codes = [error["extensions"]["code"] for error in response.get("errors", [])]
    assert "INTERNAL_SERVER_ERROR" not in codes, response
    assert response["data"] in (None, {"node": None})


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "subscription",
    [
        "subscription ($id: ID!) { generationUpdated(id: $id) { sequence } }",
        "subscription ($id: ID!) { characterUpdated(id: $id) { sequence } }",
    ],
)
def test_a_bad_id_in_a_subscription_is_not_found(asgi_server, subscription):
    socket = LiveUser(asgi_server).socket()
    socket.subscribe("bad", subscription, {"id": to_base64("Generation", "not-a-uuid")})
    refused = socket.next_for("bad")
    assert refused["payload"]["data"] is None
    assert [error["extensions"]["code"] for error in refused["payload"]["errors"]] == ["NOT_FOUND"]


@pytest.mark.parametrize("type_name", ["ShotPlan", "Failure", "Query"])
def test_a_global_id_of_a_type_that_is_no_node_is_not_found(gql, token, type_name):
    node_id = to_base64(type_name, "d6c3f2f4-3c43-4b0e-9a43-2f1d5b8f3a11")
    response = gql("query($id: ID!) { node(id: $id) { id } }", {"id": node_id}, token=token)
    assert response["data"] == {"node": None}
    assert [(e["message"], e["extensions"]["code"]) for e in response["errors"]] == [
        ("This object does not exist.", "NOT_FOUND")
    ]
