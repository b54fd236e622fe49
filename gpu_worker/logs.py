"""Logging of a GPU worker: JSON or text lines that carry the log context (gpu_worker/contract.py).

`LOG_FORMAT=json` (what production runs) writes one JSON object per line with the request id, user,
operation and job id of the generation being worked on; `text` (the default) the classic line. The
context arrives with each job message and goes back with every event the job sends, so the backend's
records of those events carry the same request id (`LogContextMiddleware`, gpu_worker/log_context.py).
"""

from __future__ import annotations

import logging
import os

from gpu_worker.contract import JsonLogFormatter, LogContextFilter

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
