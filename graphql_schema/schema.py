"""The GraphQL schema: one root type per operation kind, composed from the domain folders."""

from __future__ import annotations

from collections import OrderedDict

import strawberry
import strawberry_django
from django.conf import settings
from graphql.language import DocumentNode
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry import relay
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
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
from .live import SharedEventExecutor
from .observability import OperationObserver
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


class ValidatedDocuments(SchemaExtension):
    """Validates each distinct document once per process, not on every request: 0.7 ms for `me`, 3.4 ms
    for a home screen. Validation depends only on the text (the schema and the rules, limits included, are
    fixed per process; the limits are part of the key all the same), so a text that validated once without
    errors skips validation next time; one that failed is validated again (and fails again). Strawberry's
    ValidationCache cannot hit here: it keys on the rule classes, which the depth and alias limiters make
    anew for every request."""

    MAX_DOCUMENTS = 512
    _valid: OrderedDict[tuple, None] = OrderedDict()

    def on_validate(self):
        context = self.execution_context
        key = (
            context.query,
            settings.GRAPHQL_MAX_DEPTH,
            settings.GRAPHQL_MAX_ALIASES,
            settings.GRAPHQL_INTROSPECTION,
        )
        known = context.pre_execution_errors is None and key in self._valid
        if known:
            context.pre_execution_errors = []  # Strawberry skips validation when errors are set
            self._valid.move_to_end(key)
        yield
        if not known and context.pre_execution_errors == [] and context.query:
            self._valid[key] = None
            while len(self._valid) > self.MAX_DOCUMENTS:
                self._valid.popitem(last=False)


class ParsedDocuments(SchemaExtension):
    """Parses each distinct document once per process: a parse was 0.2-0.3 ms of a createGeneration. The
    parsed document depends only on the text and the parse options (the token limit), and graphql-core
    never changes one, so requests share it. A text that fails to parse is parsed (and fails) again, by
    Strawberry, which answers its syntax error; Strawberry's ParserCache would raise it from the hook."""

    MAX_DOCUMENTS = 512
    _parsed: OrderedDict[tuple, DocumentNode] = OrderedDict()

    def on_parse(self):
        context = self.execution_context
        key = (context.query, tuple(sorted(context.parse_options.items())))
        known = self._parsed.get(key) if context.graphql_document is None else None
        if known is not None:
            context.graphql_document = known  # Strawberry parses only when no document is set
            self._parsed.move_to_end(key)
        yield
        if known is None and context.graphql_document is not None and context.query:
            self._parsed[key] = context.graphql_document
            while len(self._parsed) > self.MAX_DOCUMENTS:
                self._parsed.popitem(last=False)


def _extensions() -> list:
    extensions: list = [
        OperationObserver,  # first, so it sees the result after the others (error codes, limits)
        lambda: MaxTokensLimiter(max_token_count=settings.GRAPHQL_MAX_TOKENS),
        lambda: QueryDepthLimiter(max_depth=settings.GRAPHQL_MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=settings.GRAPHQL_MAX_ALIASES),
        MaskUnexpectedErrors,
        RefuseNulCharacters,
        DjangoOptimizerExtension,
        ParsedDocuments,
        ValidatedDocuments,
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
    # Subscriptions execute each event's document once for all of a user's sockets (graphql_schema/live.py).
    execution_context_class=SharedEventExecutor,
    config=StrawberryConfig(disable_field_suggestions=settings.IS_PRODUCTION or not settings.DEBUG),
)
