"""Prompts checked against the admin's term lists, through createGeneration: a listed term is refused
with MODERATION before anything is held, however it is written (case, accents, spacing, leetspeak,
look-alike letters), and every refusal is audited."""

from __future__ import annotations

import pytest

from apps.accounts.models import Device, User
from apps.generations.models import Generation
from apps.moderation.models import BlockedTerm, Category, Decision, ModerationDecision, Subject
from tests.graphql.generations.helpers import CREATE, key, ledger, wallet

pytestmark = pytest.mark.django_db

CREATE_MODERATED = CREATE.replace(
    "... on Error { code message }", "... on Error { code message } ... on ModerationRefused { field }"
)


@pytest.fixture
def alice(sign_up, settings):
    settings.WELCOME_CREDITS = 20
    auth = sign_up()
    return auth["accessToken"], User.objects.get(email=auth["user"]["email"])


def _term(term: str, *, locale: str = "", anywhere: bool = False, category=Category.SEXUAL) -> BlockedTerm:
    row = BlockedTerm(term=term, locale=locale, match_anywhere=anywhere, category=category)
    row.full_clean()
    row.save()
    return row


def _create(gql, token, prompt: str) -> dict:
    variables = {"input": {"prompt": prompt, "quality": "DRAFT", "idempotencyKey": key()}}
    return gql(CREATE_MODERATED, variables, token=token)["data"]["createGeneration"]


@pytest.mark.parametrize(
    "prompt",
    [
        "a nude portrait on the beach",
        "a NUDE portrait",
        "a núdé portrait",  # accents
        "a n u d e portrait",  # spacing
        "a n.u.d.e portrait",
        "a nud3 portrait",  # leetspeak
        "a N-U-D-3 portrait",  # spacing and leetspeak
        "a nudе portrait",  # Cyrillic е (U+0435)
        "a ｎｕｄｅ portrait",  # full-width
        "a ΝUDΕ portrait",  # Greek capital Nu and Epsilon
    ],
)
def test_a_prompt_with_a_listed_term_is_refused_and_nothing_is_charged(gql, alice, shipped_routes, prompt):
    token, user = alice
    _term("nude")
    before_wallet, before_ledger = wallet(user), ledger(user)

    result = _create(gql, token, prompt)

    assert result["__typename"] == "ModerationRefused"
    assert result["code"] == "MODERATION"
    assert result["field"] == "prompt"
    assert "nude" not in result["message"].lower()  # a safe message: it does not repeat the prompt
    assert wallet(user) == before_wallet
    assert ledger(user) == before_ledger
    assert not Generation.objects.filter(owner=user).exists()
    audit = ModerationDecision.objects.get(user=user)
    assert (audit.subject, audit.decision, audit.categories) == (Subject.PROMPT, Decision.REFUSED, ["SEXUAL"])
    assert audit.decided_by is None  # automatic


def test_a_term_written_with_leetspeak_and_accents_in_the_list_matches_plain_text(gql, alice, shipped_routes):
    token, _ = alice
    _term("g0rÉ", category=Category.VIOLENCE)  # stored folded: "gore"
    assert BlockedTerm.objects.get().normalized == "gore"
    assert _create(gql, token, "lots of gore everywhere")["__typename"] == "ModerationRefused"


def test_whole_words_only_unless_the_term_matches_anywhere(gql, alice, shipped_routes):
    token, _ = alice
    _term("ass")
    assert _create(gql, token, "a glass of water in a classroom")["__typename"] == "GenerationPayload"
    _term("kill", anywhere=True, category=Category.VIOLENCE)
    assert _create(gql, token, "a ki llshot in the dark")["__typename"] == "ModerationRefused"


def test_a_phrase_matches_across_spacing_and_case(gql, alice, shipped_routes):
    token, _ = alice
    _term("blood bath", category=Category.VIOLENCE)
    assert _create(gql, token, "a  BLOOD   Bath at dawn")["__typename"] == "ModerationRefused"
    assert _create(gql, token, "a bath with blood oranges")["__typename"] == "GenerationPayload"


def test_a_locale_term_applies_to_users_of_that_language_only(gql, alice, shipped_routes):
    token, user = alice
    _term("fica", locale="pt-BR", category=Category.SEXUAL)
    Device.objects.create(user=user, token="t-en", platform="IOS", app_version="1.0", locale="en-US")
    assert _create(gql, token, "a fica scene")["__typename"] == "GenerationPayload"
    Device.objects.create(user=user, token="t-pt", platform="IOS", app_version="1.0", locale="pt_BR")
    assert _create(gql, token, "a fica scene")["__typename"] == "ModerationRefused"


def test_a_disabled_term_does_not_refuse(gql, alice, shipped_routes):
    token, _ = alice
    term = _term("nude")
    term.enabled = False
    term.save()
    assert _create(gql, token, "a nude portrait")["__typename"] == "GenerationPayload"


def test_the_same_term_twice_in_a_category_and_locale_is_refused_by_the_admin_form():
    _term("nude")
    duplicate = BlockedTerm(term="NÚDE", category=Category.SEXUAL)
    with pytest.raises(Exception, match="already exists"):
        duplicate.full_clean()


FINALIZE = """
mutation ($id: ID!, $key: String) {
  finalizeGeneration(id: $id, quality: STANDARD, idempotencyKey: $key) {
    __typename ... on Error { code message } ... on ModerationRefused { field }
  }
}
"""


def test_a_draft_whose_prompt_was_listed_since_is_not_finalized(gql, alice, shipped_routes):
    from apps.credits.services import credits_capture
    from apps.generations.models import GenerationStatus
    from tests.graphql.generations.helpers import generation_from

    token, user = alice
    created = _create(gql, token, "a nude portrait")
    assert created["__typename"] == "GenerationPayload"
    draft = generation_from(created["generation"]["id"])
    credits_capture(owner=draft)
    Generation.objects.filter(pk=draft.pk).update(status=GenerationStatus.SUCCEEDED, seed_used=1)
    _term("nude")
    before = wallet(user), ledger(user)

    result = gql(FINALIZE, {"id": created["generation"]["id"], "key": key()}, token=token)
    refused = result["data"]["finalizeGeneration"]

    assert (refused["__typename"], refused["code"], refused["field"]) == (
        "ModerationRefused",
        "MODERATION",
        "id",
    )
    assert (wallet(user), ledger(user)) == before
    assert Generation.objects.filter(owner=user).count() == 1


def test_staff_add_a_term_in_admin_and_it_applies_at_once(gql, alice, shipped_routes, admin_client):
    from django.urls import reverse

    token, _ = alice
    response = admin_client.post(
        reverse("admin:moderation_blockedterm_add"),
        {"term": "Bl00d-Bath", "category": "VIOLENCE", "locale": "", "enabled": "on", "note": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert BlockedTerm.objects.get().normalized == "blood bath"
    assert _create(gql, token, "a blood bath")["__typename"] == "ModerationRefused"
    audit = admin_client.get(reverse("admin:moderation_moderationdecision_changelist"))
    assert audit.status_code == 200 and "Refused automatically" in audit.content.decode()
