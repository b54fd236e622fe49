"""A route's scheduler override and LoRA stacking (a step-distilled checkpoint): validated in admin
through the job contract, sent to the worker in every job, and a non-stacking route takes no Soul ID."""

from __future__ import annotations

import json

import pytest
from django.forms.models import model_to_dict

from apps.generations.admin import ModelRouteForm
from apps.generations.models import ModelRoute
from apps.generations.routing import route_fallback

pytestmark = pytest.mark.django_db

DISTILLED = {"class": "UniPCMultistepScheduler", "config": {"flow_shift": 3.0, "use_flow_sigmas": True}}


def _admin_form(route: ModelRoute, **changes) -> ModelRouteForm:
    data = {**model_to_dict(route, fields=ModelRouteForm._meta.fields), **changes}
    for name in ("speed_profile", "scheduler"):  # JSON fields are posted as JSON text
        data[name] = json.dumps(data[name])
    if data["fallback"] is None:
        data["fallback"] = ""
    return ModelRouteForm(data=data, instance=route)


def test_the_admin_saves_a_distilled_route_and_its_jobs_carry_the_scheduler(shipped_routes):
    route = shipped_routes["wan2.2-ti2v-5b"]
    form = _admin_form(route, scheduler=DISTILLED, lora_stacking=False, steps=4, guidance=1.0)
    assert form.is_valid(), form.errors
    form.save()

    spec = ModelRoute.objects.get(name="wan2.2-ti2v-5b").spec()
    assert (spec.scheduler, spec.lora_stacking, spec.steps, spec.guidance) == (DISTILLED, False, 4, 1.0)
    assert not spec.takes_lora
    assert shipped_routes["ltx-video"].spec().scheduler == {}
    assert shipped_routes["ltx-video"].spec().lora_stacking is True


@pytest.mark.parametrize(
    ("scheduler", "says"),
    [
        ({"class": "LCMScheduler"}, "scheduler.class must be one of"),
        ({"class": "UniPCMultistepScheduler", "config": {"_class_name": "X"}}, "lower-case config name"),
        ({"class": "UniPCMultistepScheduler", "steps": 4}, "unknown scheduler fields: steps"),
    ],
)
def test_the_admin_refuses_a_bad_scheduler_with_what_to_fix(shipped_routes, scheduler, says):
    form = _admin_form(shipped_routes["wan2.2-ti2v-5b"], scheduler=scheduler)
    assert not form.is_valid()
    assert says in " ".join(form.errors["scheduler"])
    assert ModelRoute.objects.get(name="wan2.2-ti2v-5b").scheduler == {}


def test_a_non_stacking_route_serves_no_soul_id_and_is_no_fallback_for_one(shipped_routes):
    wan, ltx = shipped_routes["wan2.2-ti2v-5b"], shipped_routes["ltx-video"]
    wanted = dict(quality="STANDARD", lane="INSTANT", needs_image=False)
    assert ltx.serves(**wanted, needs_lora=True)
    ModelRoute.objects.filter(name="ltx-video").update(lora_stacking=False)
    ltx.refresh_from_db()
    wan.refresh_from_db()
    assert not ltx.serves(**wanted, needs_lora=True)
    assert ltx.serves(**wanted, needs_lora=False)
    assert route_fallback(wan, needs_image=False, needs_lora=True) is None
    assert route_fallback(wan, needs_image=False, needs_lora=False) == ltx
