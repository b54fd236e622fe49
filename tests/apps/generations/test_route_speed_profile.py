"""A route's GPU speed profile: validated when staff edit it, and sent to the worker in every job."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.generations.models import ModelRoute

pytestmark = pytest.mark.django_db


def test_the_shipped_wan_route_compiles_its_blocks_uses_tf32_and_decodes_in_bf16():
    shipped = {"compile_blocks": True, "tf32": True, "vae_decode_dtype": "bfloat16"}
    route = ModelRoute.objects.get(name="wan2.2-ti2v-5b")
    assert route.speed_profile == shipped
    assert route.spec().speed_profile == shipped
    assert ModelRoute.objects.get(name="tiny-wan").spec().speed_profile == {}


@pytest.mark.parametrize(
    ("profile", "says"),
    [
        ({"cache": "teacache"}, "cache must be null or one of"),
        ({"compile_blocks": "yes"}, "compile_blocks must be true or false"),
        ({"warp_drive": True}, "unknown speed profile fields: warp_drive"),
        ({"cache_params": {"threshold": 0.1}}, "cache_params are given but no cache is chosen"),
    ],
)
def test_a_bad_profile_is_refused_with_what_to_fix(profile, says):
    route = ModelRoute.objects.get(name="wan2.2-ti2v-5b")
    route.speed_profile = profile
    with pytest.raises(ValidationError) as refused:
        route.full_clean()
    assert says in " ".join(refused.value.message_dict["speed_profile"])
