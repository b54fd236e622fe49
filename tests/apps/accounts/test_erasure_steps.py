"""Account deletion reaches every app that keeps personal data: each registers its step, in order."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.accounts.erasure import ErasureStep, erasure_step_register, erasure_steps


def test_soul_ids_then_generations_are_erased_before_the_storage_sweep():
    assert [(step.key, step.order) for step in erasure_steps()] == [("soul_ids", 10), ("generations", 20)]


def test_a_second_step_under_a_taken_name_is_refused():
    with pytest.raises(ImproperlyConfigured, match="generations"):
        erasure_step_register(ErasureStep(key="generations", order=5, erase=lambda user: 0))
    assert [step.key for step in erasure_steps()] == ["soul_ids", "generations"]


def test_registering_the_same_step_again_changes_nothing():
    (first, *_) = erasure_steps()
    erasure_step_register(first)
    assert [step.key for step in erasure_steps()] == ["soul_ids", "generations"]
