"""Every enum of the API is made from the model choices it shows: same names, same stored values, same
order, so a choice added to a model reaches the API (and `make schema`) without a hand-written copy."""

from __future__ import annotations

import enum

import pytest
from graphql import GraphQLEnumType

from apps.accounts.models import Platform
from apps.characters import models as characters
from apps.characters.photo_checks import Reason
from apps.core.errors import ErrorCode
from apps.generations import models as generations
from apps.purchases import models as purchases
from apps.purchases.stores import SubscriptionState
from apps.storage import models as storage
from apps.trends import models as trends
from graphql_schema import enums
from graphql_schema.schema import schema
from graphql_schema.toolkit import API_ENUMS

# The API enum -> the choices it shows (a model's TextChoices, an enum of codes, or a tuple of codes).
MODEL_CHOICES = {
    enums.Platform: Platform,
    enums.AspectRatio: trends.AspectRatio,
    enums.QualityTier: trends.QualityTier,
    enums.CameraMovement: trends.CameraMovement,
    enums.TrendRequirement: trends.Requirement,
    enums.SectionSource: trends.SectionSource,
    enums.GenerationStatus: generations.GenerationStatus,
    enums.GenerationStage: generations.GenerationStage,
    enums.SpeedLane: generations.Lane,
    enums.GenerationFailureCode: generations.FAILURE_CODES,
    enums.CharacterStatus: characters.CharacterStatus,
    enums.CharacterPhotoStatus: characters.PhotoStatus,
    enums.PhotoReason: Reason,
    enums.UploadStatus: storage.UploadStatus,
    enums.UploadRejectReason: storage.RejectReason,
    enums.ProductKind: purchases.ProductKind,
    enums.PlanStatus: SubscriptionState,
    enums.PurchaseStatus: purchases.PurchaseStatus,
}


def _members(choices) -> list[tuple[str, str]]:
    if isinstance(choices, type) and issubclass(choices, enum.Enum):
        return [(member.name, member.value) for member in choices]
    return [(code, code) for code in choices]


@pytest.mark.parametrize(
    ("api_enum", "choices"), MODEL_CHOICES.items(), ids=lambda e: getattr(e, "__name__", "")
)
def test_api_enum_has_the_names_and_values_of_its_model_choices(api_enum, choices):
    assert [(member.name, member.value) for member in api_enum] == _members(choices)
    graphql_enum = schema._schema.type_map[api_enum.__strawberry_definition__.name]
    assert list(graphql_enum.values) == [name for name, _ in _members(choices)]


def test_every_enum_of_the_schema_is_made_from_choices():
    in_schema = {
        name
        for name, graphql_type in schema._schema.type_map.items()
        if isinstance(graphql_type, GraphQLEnumType) and not name.startswith("__")
    }
    made = {api_enum.__strawberry_definition__.name for api_enum in API_ENUMS}
    # ErrorCode is the domain's own enum of error codes, shown as it is.
    assert in_schema - made == {"ErrorCode"}
    assert made == {api_enum.__strawberry_definition__.name for api_enum in MODEL_CHOICES}
    assert set(schema._schema.type_map["ErrorCode"].values) == {code.name for code in ErrorCode}


def test_a_stored_value_converts_to_its_api_member_and_back():
    assert enums.CameraMovement("dolly_in").name == "DOLLY_IN"
    assert enums.SpeedLane(generations.Lane.ECONOMY).value == generations.Lane.ECONOMY.value
