"""GraphQL security settings over HTTP: document limits, masked bugs, stable error codes.

Each refusal comes back as a top-level GraphQL error with a message a developer can act on and an
`extensions.code`; a bug in a resolver reaches the client only as "Unexpected error." with the request id,
and the server goes on answering.
"""

import logging

import pytest
from django.conf import settings

from apps.accounts.models import User
from tests.fixtures.api import PASSWORD, SIGN_UP

pytestmark = pytest.mark.django_db

ME = "{ me { email credits } }"


def _only_error(body: dict) -> dict:
    assert body.get("data") is None, body
    assert len(body["errors"]) == 1, body
    return body["errors"][0]


def _still_serving(gql, sign_up) -> None:
    """A normal signed-in query works right after a refused or failed one."""
    auth = sign_up()
    body = gql(ME, token=auth["accessToken"])
    assert body == {"data": {"me": {"email": auth["user"]["email"], "credits": settings.WELCOME_CREDITS}}}


# --- Document limits ---------------------------------------------------------------------------------


def test_depth_limit_refuses_a_document_that_is_too_deep_and_runs_nothing(gql, sign_up, settings):
    # The limiter reads the setting per request; the schema has no cycles, so its natural depth is small
    # and the limit is lowered here to reach it with a valid document.
    settings.GRAPHQL_MAX_DEPTH = 1
    deep = SIGN_UP.replace("user { id email credits }", "user { email }")  # signUp > user > email
    error = _only_error(gql(deep, {"email": "deep@example.com", "password": PASSWORD}))
    assert error["message"] == "'anonymous' exceeds maximum operation depth of 1"
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert not User.objects.filter(email="deep@example.com").exists()
    # At the limit, the same kind of document runs.
    assert gql("{ me { email } }") == {"data": {"me": None}}
    settings.GRAPHQL_MAX_DEPTH = 12
    _still_serving(gql, sign_up)


def test_a_document_validated_before_still_meets_a_lowered_depth_limit(gql, settings):
    """Each text is validated once per process (ValidatedDocuments); the limits are part of what was
    validated, so a document that passed under one limit is checked again under another."""
    deep = "{ me { plan { __typename } } }"  # me > plan > __typename
    assert gql(deep) == {"data": {"me": None}}
    assert gql(deep) == {"data": {"me": None}}  # validated already: served the same
    settings.GRAPHQL_MAX_DEPTH = 1
    error = _only_error(gql(deep))
    assert error["message"] == "'anonymous' exceeds maximum operation depth of 1"
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}


def test_alias_limit_refuses_one_alias_too_many(gql, sign_up):
    limit = settings.GRAPHQL_MAX_ALIASES
    assert limit == 15

    def aliased(count: int) -> str:
        return "{ " + " ".join(f"a{i}: me {{ email }}" for i in range(count)) + " }"

    assert gql(aliased(limit))["data"] == {f"a{i}": None for i in range(limit)}
    error = _only_error(gql(aliased(limit + 1)))
    assert error["message"] == f"{limit + 1} aliases found. Allowed: {limit}"
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    _still_serving(gql, sign_up)


def test_token_limit_refuses_an_oversized_document_before_parsing_it_all(gql, sign_up):
    limit = settings.GRAPHQL_MAX_TOKENS
    assert limit == 2000

    def document(spreads: int) -> str:
        # 12 tokens around the spreads (`{ me { } } fragment F on User { email }`), 2 per `...F`.
        return "{ me { " + "...F " * spreads + "} } fragment F on User { email }"

    exactly_at_limit = (limit - 12) // 2
    assert gql(document(exactly_at_limit)) == {"data": {"me": None}}
    error = _only_error(gql(document(exactly_at_limit + 1)))
    assert error["message"] == f"Syntax Error: Document contains more than {limit} tokens. Parsing aborted."
    assert error["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}
    _still_serving(gql, sign_up)


def test_a_document_parsed_before_still_meets_a_lowered_token_limit(gql, settings):
    """Each text is parsed once per process (ParsedDocuments); the token limit is part of the parse, so a
    document parsed under one limit is parsed again under a lower one."""
    document = "{ me { email } }"  # 6 tokens
    assert gql(document) == {"data": {"me": None}}
    assert gql(document) == {"data": {"me": None}}  # parsed already: served the same
    settings.GRAPHQL_MAX_TOKENS = 5
    error = _only_error(gql(document))
    assert error["message"] == "Syntax Error: Document contains more than 5 tokens. Parsing aborted."
    assert error["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}


@pytest.mark.parametrize("escape", ["\\u0000", "\\u{0}", "\\u{000000}"])
def test_a_nul_written_as_an_escape_in_a_literal_is_refused_and_runs_nothing(gql, sign_up, escape):
    literal = (
        f'mutation {{ signUp(input: {{email: "nul{escape}@example.com", password: "{PASSWORD}"}}) '
        "{ __typename } }"
    )
    for _ in range(2):  # the second time from the parsed document kept for the text
        error = _only_error(gql(literal))
        assert (
            error["message"] == "Text cannot contain the NUL character (\\u0000): remove it and send again."
        )
        assert error["extensions"] == {"code": "VALIDATION"}
    assert User.objects.count() == 0
    plain = literal.replace(escape, "")
    assert gql(plain)["data"]["signUp"]["__typename"] == "AuthPayload"
    _still_serving(gql, sign_up)


# --- Masked bugs --------------------------------------------------------------------------------------


def _explode(**kwargs):
    raise RuntimeError("secret internals")


@pytest.mark.parametrize(
    ("target", "query", "variables", "signed_in"),
    [
        pytest.param(
            "apps.accounts.services.user_sign_up",
            SIGN_UP,
            {"email": "boom@example.com", "password": PASSWORD},
            False,
            id="mutation-service",
        ),
        pytest.param(
            "graphql_schema.credits.subscriptions.wallet_state",
            "{ wallet { balance held } }",
            None,
            True,
            id="query-selector",
        ),
    ],
)
def test_unexpected_exception_is_masked_with_the_request_id(
    gql, sign_up, monkeypatch, caplog, target, query, variables, signed_in
):
    token = sign_up()["accessToken"] if signed_in else None
    monkeypatch.setattr(target, _explode)

    with caplog.at_level(logging.INFO, logger="graphql_schema"):
        response = gql.raw(query, variables, token=token)

    assert response.status_code == 200
    request_id = response["X-Request-ID"]
    assert request_id
    error = _only_error(response.json())
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    body = response.content.decode()
    for leak in ("secret internals", "RuntimeError", "Traceback", "services.py"):
        assert leak not in body
    # The internals are in the server log, under the same request id.
    logged = [r for r in caplog.records if r.name == "graphql_schema" and r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert request_id in logged[0].getMessage()
    assert "secret internals" in logged[0].getMessage()

    monkeypatch.undo()
    _still_serving(gql, sign_up)


def test_the_callers_request_id_is_kept_in_the_masked_error(gql, monkeypatch):
    monkeypatch.setattr("apps.accounts.services.user_sign_up", _explode)
    response = gql.raw(
        SIGN_UP, {"email": "b@example.com", "password": PASSWORD}, HTTP_X_REQUEST_ID="app-trace-123"
    )
    assert response["X-Request-ID"] == "app-trace-123"
    assert _only_error(response.json())["extensions"]["requestId"] == "app-trace-123"


# --- Expected errors keep their codes -----------------------------------------------------------------


def test_domain_errors_keep_their_codes(gql, sign_up):
    # A top-level error (not signed in) and a typed union error (email taken) are never masked.
    error = _only_error(gql("{ wallet { balance } }"))
    assert error["message"] == "Sign in to do this."
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert error["path"] == ["wallet"]

    expired = _only_error(gql("{ wallet { balance } }", token="not-a-token"))
    assert expired["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "expired" in expired["message"]

    sign_up(email="taken@example.com")
    taken = gql(SIGN_UP, {"email": "taken@example.com", "password": PASSWORD})["data"]["signUp"]
    assert taken["__typename"] == "EmailTaken"
    assert taken["code"] == "EMAIL_TAKEN"
    assert taken["message"] == "An account with this email already exists. Sign in instead."


@pytest.mark.parametrize(
    ("query", "variables", "code", "message"),
    [
        pytest.param(
            "{ me { email }", None, "GRAPHQL_PARSE_FAILED", "Syntax Error: Expected Name", id="parse"
        ),
        pytest.param(
            "{ me { nickname } }",
            None,
            "GRAPHQL_VALIDATION_FAILED",
            "Cannot query field 'nickname' on type 'User'.",
            id="unknown-field",
        ),
        pytest.param(
            SIGN_UP,
            {"email": 5, "password": PASSWORD},
            "GRAPHQL_VALIDATION_FAILED",
            "Variable '$email' has invalid value: String cannot represent a non string value: 5",
            id="variable-type",
        ),
        pytest.param(
            SIGN_UP,
            {"password": PASSWORD},
            "GRAPHQL_VALIDATION_FAILED",
            "Variable '$email' has invalid value: Expected a value of non-null type 'String!'",
            id="variable-missing",
        ),
    ],
)
def test_malformed_requests_get_a_graphql_error_with_a_code(gql, sign_up, query, variables, code, message):
    error = _only_error(gql(query, variables))
    assert error["message"].startswith(message), error
    assert error["extensions"] == {"code": code}
    assert User.objects.count() == 0
    _still_serving(gql, sign_up)
