"""Sending a message to a backend actor by its name.

A service hands work to a backend worker after the commit without importing its app's tasks module (which
imports the service: a cycle); the actor name is a constant the service and the tasks module share.
"""

from __future__ import annotations

from typing import Any

import dramatiq


def actor_send(actor_name: str, *args: Any, **kwargs: Any) -> None:
    dramatiq.get_broker().get_actor(actor_name).send(*args, **kwargs)
