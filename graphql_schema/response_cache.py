"""The home screen's response cache: a `homeScreen` query answered with the bytes of an earlier answer.

A home screen is the same for every caller of one audience and one *segment* (apps.trends'
`home_screen_segment`: signed out, or what the personal sections and `viewerHasFavorited` read about a
user), and executing its ~1,100 fields costs several times what reading the cached screen does. So the
view keys a response by the document, the operation name, the variables and the segment, and stores the
serialized body in apps.trends' screen cache (cache.py): under the catalogue's version token, until the
screen it was made from expires. A curator's change sets a new token, so the next request executes again.

Only a document whose operation selects nothing but `homeScreen` (and `__typename`) is stored, and only
an answer without errors; a hit is therefore a document that has passed parsing, validation and the
limits before. Cache hits skip the schema's extensions (they execute nothing).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse

from apps.trends import cache as screen_cache
from apps.trends import selectors as trend_selectors

# The root fields a cached document may select: the home screen is all it reads.
CACHEABLE_ROOT_FIELDS = frozenset({"homeScreen", "__typename"})


@dataclass(frozen=True)
class Lookup:
    key: str
    token: str
    body: bytes | None


def _lookup(user, base: str) -> Lookup:
    key = hashlib.sha256(f"{base}\0{trend_selectors.home_screen_segment(user=user)}".encode()).hexdigest()
    token, body = screen_cache.response_cache_get(key)
    return Lookup(key=key, token=token, body=body)


async def response_cache_lookup(*, user, query: str | None, operation_name, variables) -> Lookup | None:
    """The stored answer for this request (`body`), or where to store one; None when the document cannot
    be a home screen query (a cheap test first, so other operations pay nothing)."""
    if not query or "homeScreen" not in query:
        return None
    base = json.dumps([query, operation_name, variables], sort_keys=True, separators=(",", ":"))
    if user is None:
        # Signed out: no database read, only the token's cache GET; a thread hop would cost more than it.
        return _lookup(None, base)
    return await sync_to_async(_lookup)(user, base)


def response_cache_store(lookup: Lookup, body: bytes, expires: float) -> None:
    screen_cache.response_cache_set(lookup.token, lookup.key, body, expires)


@functools.lru_cache(maxsize=256)
def home_screen_only(query: str, operation_name: str | None) -> bool:
    """Whether the operation run from `query` is a query selecting only `homeScreen` and `__typename`."""
    try:
        document = parse(query)
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [op for op in operations if op.name and op.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation != OperationType.QUERY:
        return False
    # Fragments at the root could select anything: only plain fields count.
    return all(
        isinstance(selection, FieldNode) and selection.name.value in CACHEABLE_ROOT_FIELDS
        for selection in operations[0].selection_set.selections
    )


@functools.lru_cache(maxsize=256)
def operation_name_of(query: str, operation_name: str | None) -> str | None:
    """The name of the operation `query` runs (the metrics' label of an answer from the cache, which the
    schema, and so its extension, never sees): `operation_name` when sent, else the document's only one."""
    if operation_name:
        return operation_name
    try:
        document = parse(query)
    except GraphQLError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return operations[0].name.value if len(operations) == 1 and operations[0].name else None
