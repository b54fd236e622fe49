"""Module that Dramatiq's CLI imports in each backend worker process: sets up Django and its actors."""

from backend.worker import setup

setup()
