"""Calling services from async resolvers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from apps.core.errors import DomainError

from .errors import Error, error_from

T = TypeVar("T")


async def call_service(service: Callable[..., T], **kwargs: Any) -> T | Error:
    """Runs a (sync, atomic) service in a worker thread; a DomainError becomes its GraphQL error type.

    Pass a lambda (`call_service(lambda: service(user=user, x_id=node_pk(...)))`) when arguments are
    parsed too: a DomainError from parsing them (a bad ID) is then the same typed error as the service's.
    """
    try:
        return await sync_to_async(service)(**kwargs)
    except DomainError as exc:
        return error_from(exc)
