"""The Dramatiq middleware that carries the log context (gpu_worker/contract.py) across processes.

One class for both sides: the backend adds it to its broker (backend/broker.py) and the GPU workers to
theirs (gpu_worker/actors.py), so a generation can be followed from its HTTP request through every
worker. It imports only the standard library, Dramatiq and the contract: besides the contract, the one
module of gpu_worker that Django code may import (tests/test_boundaries.py), so no torch comes with it.
"""

from __future__ import annotations

from contextvars import Token

import dramatiq
from dramatiq.middleware import Middleware

from gpu_worker.contract import log_context_bind_options, log_context_reset, log_context_to_options


class LogContextMiddleware(Middleware):
    """Puts the current context on every message sent (a job, its events), and binds the context a
    message carries while it is processed (and only then)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}  # by message id: each is bound and reset on its own thread

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int) -> None:
        log_context_to_options(message.options)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        self._tokens[message.message_id] = log_context_bind_options(message.options)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        token = self._tokens.pop(message.message_id, None)
        if token is not None:
            log_context_reset(token)

    after_skip_message = after_process_message


def install_log_context(broker: dramatiq.Broker) -> None:
    """Adds `LogContextMiddleware` to `broker` once. In the embedded mode the broker is the backend's,
    which already has it (backend/broker.py)."""
    if not any(isinstance(m, LogContextMiddleware) for m in broker.middleware):
        broker.add_middleware(LogContextMiddleware())
