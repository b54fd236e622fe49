"""The GraphQL schema: one root type per operation kind, composed from the domain folders."""

from __future__ import annotations

import strawberry
import strawberry_django
from django.conf import settings
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry import relay
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry_django.optimizer import DjangoOptimizerExtension

from .accounts.mutations import AccountMutations
from .accounts.queries import AccountQueries
from .accounts.types import DeviceType, UserType
from .characters.mutations import CharacterMutations
from .characters.queries import CharacterQueries
from .characters.subscriptions import CharacterSubscriptions
from .characters.types import CharacterPhotoType, CharacterType
from .credits.queries import CreditQueries
from .credits.subscriptions import CreditSubscriptions
from .errors import ALL_ERROR_TYPES, MaskUnexpectedErrors, RefuseNulCharacters, log_errors
from .generations.mutations import GenerationMutations
from .generations.queries import GenerationQueries
from .generations.subscriptions import GenerationSubscriptions
from .generations.types import GenerationType
from .purchases.mutations import PurchaseMutations
from .purchases.queries import PurchaseQueries
from .storage.mutations import StorageMutations
from .storage.types import UploadType
from .trends.mutations import TrendMutations
from .trends.queries import TrendQueries
from .trends.types import TrendType


@strawberry.type
class Query(
    AccountQueries, CreditQueries, PurchaseQueries, TrendQueries, GenerationQueries, CharacterQueries
):
    node: relay.Node | None = strawberry_django.node(description="Any of your objects by its global ID.")


@strawberry.type
class Mutation(
    AccountMutations,
    StorageMutations,
    PurchaseMutations,
    TrendMutations,
    GenerationMutations,
    CharacterMutations,
):
    pass


@strawberry.type
class Subscription(CreditSubscriptions, GenerationSubscriptions, CharacterSubscriptions):
    pass


class Schema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        log_errors(errors, execution_context)

    @staticmethod
    def remove_field_suggestion(error) -> None:
        # Called when `disable_field_suggestions` is on. Strawberry strips the hint only from unknown
        # fields; unknown arguments, types and enum values would still name parts of the schema.
        if " Did you mean" in error.message:
            error.message = error.message.split(" Did you mean")[0].strip()


GRAPHQL_DOCUMENT_CACHE_SIZE = 512


def _extensions() -> list:
    extensions: list = [
        lambda: MaxTokensLimiter(max_token_count=settings.GRAPHQL_MAX_TOKENS),
        lambda: QueryDepthLimiter(max_depth=settings.GRAPHQL_MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=settings.GRAPHQL_MAX_ALIASES),
        MaskUnexpectedErrors,
        RefuseNulCharacters,
        DjangoOptimizerExtension,
        # The apps send a few hundred distinct documents: validate each once per process, not per request
        # (0.7 ms for `me`, 3.4 ms for a home screen). Keyed by the parsed document and the rules, so the
        # depth and alias limits still apply. No parser cache: parsing is cheap, and its errors would
        # lose their code.
        lambda: ValidationCache(maxsize=GRAPHQL_DOCUMENT_CACHE_SIZE),
    ]
    if not settings.GRAPHQL_INTROSPECTION:
        extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return extensions


schema = Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    types=[
        *ALL_ERROR_TYPES,
        UserType,
        DeviceType,
        UploadType,
        TrendType,
        GenerationType,
        CharacterType,
        CharacterPhotoType,
    ],
    extensions=_extensions(),
    config=StrawberryConfig(disable_field_suggestions=settings.IS_PRODUCTION or not settings.DEBUG),
)
