"""What every domain's GraphQL types share, written once: enums from model choices, the node-id parser,
the one media-file type and its builder, and the one way to make a URL the app can call.

One strawberry style per kind of type; follow it in `graphql_schema/<domain>/types.py`:

- **A model the API hands out by id** (Generation, Character, CharacterPhoto, Upload, User, Device):
  `@strawberry_django.type(Model, name=..., description=...)` over `ModelNode` (below). Columns shown as
  they are stored are plain annotations (`created_at: datetime`, and a choices column as its API enum,
  `status: UploadStatus`, which serializes the stored value); anything computed is a
  `@strawberry_django.field` method taking `root: strawberry.Parent[Model]`, `async def` when it cannot
  touch the database, plain `def` (strawberry-django runs it in a worker thread) when it may.
  `get_queryset` narrows to what the caller may see by calling the domain's selector
  (`queryset & <entities>_visible_to(user=info.context.user)`) and adds loading hints only: who may see a
  row is decided in `apps/<domain>/selectors.py`, never here.
- **A row served from a cache** (Trend, the home screen): a plain `@strawberry.type`, resolvers that read
  attributes only, `resolve_nodes` through a selector; the reason is in `trends/types.py`.
- **A value** (MediaFile, Failure, ShotPlan, payloads, sections): a plain `@strawberry.type` with
  annotated fields and no resolvers, built by the resolver that returns it.
- **An enum**: `choices_enum(<model choices>, name=..., description=...)` in `graphql_schema/enums.py`,
  never member by member (a test compares every API enum with its choices).
- **An ID argument**: `node_pk(id, "<TypeName>", field=...)`, inside the `call_service` call of a mutation
  (`call_service(lambda: service(..., x_id=node_pk(...)))`) or inside the `try` of a query that maps
  `NotFound`, so a bad ID is the same typed NOT_FOUND as a missing object.
- **A file**: `MediaFile`, built by `media_file(info, row, "<name>", content_type=...)` from the
  row's `<name>_key`, `<name>_width`, `<name>_height`, `<name>_bytes` (and video) columns.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from typing import Any

import strawberry
from strawberry import Info, relay
from strawberry.relay.types import GlobalIDValueError
from strawberry_django.relay import resolve_model_node
from strawberry_django.resolvers import django_resolver

from apps.core.errors import NotFound
from apps.storage.backends import get_storage

# --- Enums from model choices ----------------------------------------------------------------------

# Every enum `choices_enum` made, with the members it was made from (tests/graphql/test_enums.py).
API_ENUMS: dict[type[enum.Enum], list[tuple[str, str]]] = {}


def choices_enum(choices: type[enum.Enum] | Iterable[str], *, name: str, description: str) -> type[enum.Enum]:
    """The GraphQL enum of a model's choices (or of a list of codes, each its own name): the member names
    are the GraphQL values, the member values the stored ones, so `Enum(row.status)` converts a row's
    value and `.value` gives it back."""
    if isinstance(choices, type) and issubclass(choices, enum.Enum):
        members = [(member.name, str(member.value)) for member in choices]
    else:
        members = [(str(code), str(code)) for code in choices]
    api_enum = strawberry.enum(enum.Enum(name, members), name=name, description=description)
    API_ENUMS[api_enum] = members
    return api_enum


# --- Node IDs --------------------------------------------------------------------------------------

# What a NotFound says for each node type an argument may name.
_NOUNS = {"Generation": "generation", "Character": "Soul ID", "CharacterPhoto": "photo", "Upload": "upload"}


def node_key(key: object) -> uuid.UUID | None:
    """The UUID primary key that the key part of a global ID spells; None when it spells none."""
    try:
        return uuid.UUID(str(key))
    except ValueError:
        return None


def node_pk(value: str, type_name: str, *, field: str = "id") -> uuid.UUID:
    """The primary key that a global ID of `type_name` names; a bare UUID is accepted too.

    Anything else (not a global ID, one of another type, not a UUID inside) raises `NotFound` naming
    `field`, exactly like an ID of nothing: a mutation calls it inside `call_service`, which turns it into
    the typed NotFound of its result; a query calls it inside the `try` that maps NotFound.
    """
    try:
        global_id = relay.GlobalID.from_id(value)
    except (GlobalIDValueError, ValueError, TypeError):
        raw = value  # not a global ID: a bare UUID, or nothing
    else:
        raw = global_id.node_id if global_id.type_name == type_name else ""
    pk = node_key(raw)
    if pk is None:
        raise NotFound(f"This {_NOUNS.get(type_name, 'object')} does not exist.", field=field)
    return pk


class ModelNode(relay.Node):
    """`relay.Node` for the strawberry-django types of models keyed by UUID: a `node(id:)` whose key is not
    a UUID names nothing (null), like an ID of nothing, instead of failing in the database query."""

    @classmethod
    def resolve_node(cls, node_id: str, *, info: Info, required: bool = False) -> Any:
        if node_key(node_id) is None:
            if required:
                raise NotFound(field="id")
            return None
        return django_resolver(resolve_model_node)(cls, node_id, info=info, required=required)


def node_id(type_name: str, pk: object) -> strawberry.ID:
    """The global ID of a `type_name` row."""
    return strawberry.ID(relay.to_base64(type_name, pk))


# --- URLs and files --------------------------------------------------------------------------------


def absolute_url(info: Info, url: str) -> str:
    """A URL the app can call. Storage URLs served by this server are paths unless PUBLIC_BASE_URL is
    set: they are resolved against the request the app made, over HTTP (the request) and over a
    websocket (its Host header) alike."""
    if "://" in url:
        return url
    request = getattr(info.context, "request", None)
    build = getattr(request, "build_absolute_uri", None)
    if build is not None:
        return build(url)
    scope = getattr(info.context.ws, "scope", None) or {}
    host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
    if not host:
        return url
    secure = scope.get("scheme") in ("wss", "https")
    return f"{'https' if secure else 'http'}://{host}{url}"


def download_url(info: Info, key: str) -> str | None:
    """The expiring URL of a stored object; None when there is no key."""
    return absolute_url(info, get_storage().download_url(key)) if key else None


@strawberry.type(description="A file to download: an expiring URL and what it holds.")
class MediaFile:
    url: str = strawberry.field(description="Works for a few minutes; query again for a fresh one.")
    width: int
    height: int
    duration_seconds: float | None = strawberry.field(description="Videos only.")
    fps: int | None = strawberry.field(description="Videos only.")
    bytes: int
    content_type: str


def media_file(info: Info, row: Any, name: str, *, content_type: str) -> MediaFile | None:
    """The MediaFile of the file a model row stores as `<name>_key`, `<name>_width`, `<name>_height` and
    `<name>_bytes` (and `<name>_duration_seconds`, `<name>_fps` for a video); None when nothing is stored."""
    url = download_url(info, getattr(row, f"{name}_key"))
    if url is None:
        return None
    return MediaFile(
        url=url,
        content_type=content_type,
        width=getattr(row, f"{name}_width") or 0,
        height=getattr(row, f"{name}_height") or 0,
        bytes=getattr(row, f"{name}_bytes") or 0,
        duration_seconds=getattr(row, f"{name}_duration_seconds", None),
        fps=getattr(row, f"{name}_fps", None),
    )
