"""A Strawberry extension that measures each operation and names it in the logs.

It counts operations by name and type, times queries and mutations (a subscription lasts as long as the
client listens: counted, not timed), counts top-level errors by their `extensions.code` (after
MaskUnexpectedErrors gave every error one), and binds the operation and the user to the log context while
the operation runs, so the records of its resolvers and of the jobs it sends name them. Cheap: a few
dictionary look-ups and one histogram observation per operation; nothing per field.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from apps.core.metrics import GRAPHQL_ERRORS, GRAPHQL_OPERATIONS, GRAPHQL_SECONDS, operation_label
from gpu_worker.contract import log_context_bind, log_context_reset

logger = logging.getLogger(__name__)


class OperationObserver(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        user = getattr(self.execution_context.context, "user", None)
        token = log_context_bind(user_id=getattr(user, "pk", None))
        try:
            yield
        finally:
            # The name is known once the document is parsed (a client need not send operationName).
            self._record(self.execution_context.operation_name, started)
            # The hook may end in another context (an async generator closed elsewhere): nothing to undo.
            with contextlib.suppress(ValueError):
                log_context_reset(token)

    def on_execute(self) -> Iterator[None]:
        token = log_context_bind(operation=self.execution_context.operation_name)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                log_context_reset(token)

    def _record(self, name: str | None, started: float) -> None:
        try:
            kind = self.execution_context.operation_type.value
        except Exception:  # a document that did not parse has no operation type
            kind = "unknown"
        operation_record(name, kind, started)
        result = self.execution_context.result
        for error in getattr(result, "errors", None) or ():
            GRAPHQL_ERRORS.labels(code=str((error.extensions or {}).get("code") or "UNKNOWN")).inc()


def operation_record(name: str | None, kind: str, started: float) -> None:
    """Counts one operation (and times it, unless a subscription). Also called by the view for a home
    screen answered from the response cache, which never reaches the schema and so this extension."""
    operation = operation_label(name)
    GRAPHQL_OPERATIONS.labels(operation=operation, type=kind).inc()
    if kind != "subscription":
        GRAPHQL_SECONDS.labels(operation=operation, type=kind).observe(time.perf_counter() - started)
