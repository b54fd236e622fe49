"""Choices that several apps share: a trend offers them, a generation is made with them, routes and prices
are keyed by them. They live here, at the bottom layer, so every app may import them."""

from __future__ import annotations

from django.db import models

import gpu_worker.contract as contract


class AspectRatio(models.TextChoices):
    PORTRAIT_9_16 = "PORTRAIT_9_16", "9:16 portrait"
    SQUARE_1_1 = "SQUARE_1_1", "1:1 square"
    LANDSCAPE_16_9 = "LANDSCAPE_16_9", "16:9 landscape"


class QualityTier(models.TextChoices):
    DRAFT = "DRAFT", "Draft"
    STANDARD = "STANDARD", "Standard"
    CINEMA = "CINEMA", "Cinema"


class Lane(models.TextChoices):
    """The GPU lane a job waits in (the lane names are the job contract's)."""

    INSTANT = contract.LANE_INSTANT, "Instant"
    ECONOMY = contract.LANE_ECONOMY, "Economy (cheaper, lower priority)"
