"""Logging of a GPU worker: JSON or text lines that carry the log context (gpu_worker/contract.py).

`LOG_FORMAT=json` (what production runs) writes one JSON object per line with the request id, user,
operation and job id of the generation being worked on; `text` (the default) the classic line. The
context arrives with each job message (`LogContextMiddleware`) and goes back with every event the job
sends, so the backend's records of those events carry the same request id.
"""

from __future__ import annotations

import logging
import os
from contextvars import Token

import dramatiq
from dramatiq.middleware import Middleware

from gpu_worker.contract import (
    JsonLogFormatter,
    LogContextFilter,
    log_context_bind_options,
    log_context_reset,
    log_context_to_options,
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(*, log_format: str | None = None, level: str | None = None) -> None:
    """The root logger of a GPU worker process: one stream handler in `log_format` (json or text)."""
    log_format = (log_format or os.environ.get("LOG_FORMAT") or "text").strip().lower()
    if log_format not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be json or text, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(LogContextFilter())
    logging.basicConfig(level=level or os.environ.get("LOG_LEVEL", "INFO"), handlers=[handler], force=True)


class LogContextMiddleware(Middleware):
    """Binds the context a message carries while it is processed, and puts the current context on every
    message sent meanwhile (the job's events)."""

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
    which already has its twin (backend/broker.py; the two sides share no code but the contract)."""
    if not any(type(m).__name__ == "LogContextMiddleware" for m in broker.middleware):
        broker.add_middleware(LogContextMiddleware())
