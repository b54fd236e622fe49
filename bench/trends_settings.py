"""Settings for bench/trends_home.py: the project's settings plus a plain Django twin of `homeScreen`."""

from backend.settings import *  # noqa: F403

ROOT_URLCONF = "bench.trends_urls"
