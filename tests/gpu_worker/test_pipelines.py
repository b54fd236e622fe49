"""The real routes (Wan 2.2 TI2V-5B, LTX-Video) without their weights: argument building and input
checks, a clear error for a missing folder or device, and their loading code run end to end on tiny
random checkpoints saved in their diffusers layout."""

from __future__ import annotations

import pytest
import torch

from gpu_worker.contract import BAD_INPUT, FAMILY_LTX, FAMILY_WAN22, MODEL_UNAVAILABLE, RouteSpec
from gpu_worker.pipelines import ModelUnavailable, check_inputs, ltx, wan22
from tests.fixtures.gpu import decoded_frames, image_bytes, make_job


def wan22_route(**overrides) -> RouteSpec:
    fields = dict(
        name="wan22-ti2v-5b",
        family=FAMILY_WAN22,
        checkpoint="Wan2.2-TI2V-5B-Diffusers",
        width=1280,
        height=704,
        fps=24,
        frames=121,
        steps=50,
        guidance=5.0,
        image_conditioning=True,
        lora_support=True,
    )
    return RouteSpec(**{**fields, **overrides})


def ltx_route(**overrides) -> RouteSpec:
    fields = dict(
        name="ltx-video-2b",
        family=FAMILY_LTX,
        checkpoint="LTX-Video-0.9.7-distilled",
        width=768,
        height=512,
        fps=24,
        frames=121,
        steps=8,
        guidance=1.0,
        image_conditioning=True,
        lora_support=False,
    )
    return RouteSpec(**{**fields, **overrides})


def _callback(pipe, step, timestep, kwargs):
    return kwargs


def test_wan22_text_to_video_arguments():
    job = make_job(route=wan22_route(), width=704, height=1280, num_frames=121, aspect_ratio="9:16")
    generator = torch.Generator().manual_seed(1)
    assert wan22.build_call_kwargs(job, image=None, generator=generator, callback=_callback) == {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "height": 1280,
        "width": 704,
        "num_frames": 121,
        "num_inference_steps": 50,
        "guidance_scale": 5.0,
        "generator": generator,
        "output_type": "latent",
        "callback_on_step_end": _callback,
        "callback_on_step_end_tensor_inputs": ["latents"],
        "max_sequence_length": 512,
    }


def test_wan22_image_to_video_passes_the_selfie():
    job = make_job(route=wan22_route(), width=1280, height=704, num_frames=121, image_key="uploads/u/s")
    kwargs = wan22.build_call_kwargs(job, image="the selfie", generator=None, callback=_callback)
    assert kwargs["image"] == "the selfie" and kwargs["output_type"] == "latent"


def test_ltx_arguments_with_and_without_a_first_frame():
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    job = make_job(route=ltx_route(), width=768, height=512, num_frames=121, aspect_ratio="16:9")
    kwargs = ltx.build_call_kwargs(job, image=None, generator=None, callback=_callback)
    assert "conditions" not in kwargs and "image" not in kwargs
    assert (kwargs["frame_rate"], kwargs["num_inference_steps"], kwargs["guidance_scale"]) == (24, 8, 1.0)
    assert (kwargs["max_sequence_length"], kwargs["output_type"]) == (256, "latent")

    with_image = ltx.build_call_kwargs(job, image="the selfie", generator=None, callback=_callback)
    [condition] = with_image["conditions"]
    assert isinstance(condition, LTXVideoCondition)
    assert (condition.image, condition.frame_index, condition.strength) == ("the selfie", 0, 1.0)


DISTILLED_KWARGS = {
    "timesteps": [1000, 993, 987, 981, 975, 909, 725, 0.03],
    "guidance_scale": 1.0,
    "guidance_rescale": 0.7,
    "image_cond_noise_scale": 0.0,
    "decode_timestep": 0.05,
    "decode_noise_scale": 0.025,
}


@pytest.mark.parametrize(
    ("checkpoint", "steps", "guidance", "expected"),
    [
        ("LTX-Video-0.9.7-distilled", 8, 1.0, DISTILLED_KWARGS),
        ("LTX-Video-0.9.8-13B-distilled", 8, 1.0, DISTILLED_KWARGS),
        (
            "LTX-Video-0.9.5",
            40,
            5.0,
            {
                "guidance_scale": 5.0,
                "guidance_rescale": 0.0,
                "image_cond_noise_scale": 0.15,
                "decode_timestep": 0.05,
                "decode_noise_scale": 0.025,
            },
        ),
    ],
    ids=["0.9.7-distilled", "0.9.8-distilled", "0.9.5-base"],
)
def test_ltx_calls_follow_the_checkpoints_recipe(checkpoint, steps, guidance, expected):
    route = ltx_route(checkpoint=checkpoint, steps=steps, guidance=guidance)
    job = make_job(route=route, width=768, height=512, num_frames=121, aspect_ratio="16:9")
    check_inputs(job)

    kwargs = ltx.build_call_kwargs(job, image="the selfie", generator=None, callback=_callback)

    assert {name: kwargs[name] for name in expected} == expected
    assert ("timesteps" in kwargs) == ("timesteps" in expected)
    assert kwargs["num_inference_steps"] == steps


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"steps": 30}, "8 steps, not 30"), ({"guidance": 3.0}, "guidance 1.0, not 3.0")],
    ids=["steps", "guidance"],
)
def test_a_distilled_ltx_route_that_contradicts_its_recipe_is_refused(overrides, message):
    job = make_job(route=ltx_route(**overrides), width=768, height=512, num_frames=121, aspect_ratio="16:9")
    with pytest.raises(ValueError, match=f"0.9.7/0.9.8 distilled recipe: {message}"):
        check_inputs(job)


@pytest.mark.parametrize(
    ("route", "overrides", "message"),
    [
        (wan22_route(), {"width": 1280, "height": 720}, "multiples of 32"),
        (wan22_route(), {"width": 1280, "height": 704, "num_frames": 120}, r"4\*k\+1"),
        (wan22_route(), {"width": 1920, "height": 1088}, "larger than"),
        (
            wan22_route(image_conditioning=False),
            {"width": 1280, "height": 704, "image_key": "u/s"},
            "no input image",
        ),
        (ltx_route(), {"width": 768, "height": 512, "num_frames": 117}, r"8\*k\+1"),
        (ltx_route(), {"width": 768, "height": 512, "num_frames": 121, "lora_key": "c/l"}, "takes no LoRA"),
    ],
)
def test_inputs_a_route_cannot_render_are_refused(route, overrides, message):
    job = make_job(route=route, **{"num_frames": 121, **overrides})
    with pytest.raises(ValueError, match=message):
        check_inputs(job)


@pytest.mark.parametrize("module", [wan22, ltx])
def test_a_missing_checkpoint_folder_is_a_clear_error(module, tmp_path):
    route = wan22_route() if module is wan22 else ltx_route()
    (tmp_path / route.checkpoint).mkdir()  # a folder without model_index.json is no checkpoint either
    with pytest.raises(ModelUnavailable, match=rf"no diffusers checkpoint at .*{route.checkpoint}"):
        module.load(route, model_root=tmp_path)
    with pytest.raises(ModelUnavailable, match="names no checkpoint"):
        module.load(RouteSpec(**{**route.__dict__, "checkpoint": ""}), model_root=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_real_route_asks_for_cuda_and_says_when_there_is_none(tiny_model_root):
    with pytest.raises(ModelUnavailable, match="CUDA is not available"):
        wan22.load(wan22_route(checkpoint="wan22-tiny"), model_root=tiny_model_root, device="cuda")


def test_the_runner_reports_a_missing_model_as_retryable(make_runner, event_log, tmp_path):
    job = make_job(route=wan22_route(), width=1280, height=704, num_frames=121)
    terminal = make_runner(model_root=tmp_path / "empty").run(job)
    assert (terminal.kind, terminal.reason_code, terminal.retryable) == ("failed", MODEL_UNAVAILABLE, True)
    assert "not available" in terminal.message


@pytest.mark.parametrize(
    "route",
    [
        wan22_route(checkpoint="wan22-tiny", width=32, height=32, frames=9, steps=2),
        ltx_route(checkpoint="ltx-tiny", width=32, height=32, frames=9, steps=2, guidance=3.0),
    ],
    ids=["wan22", "ltx"],
)
@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_the_loading_code_runs_a_saved_checkpoint_end_to_end(
    make_runner, storage, tiny_model_root, monkeypatch, route, with_image
):
    """wan22.load / ltx.load on a folder in the real layout (CPU, float32 instead of CUDA, bfloat16)."""
    module = wan22 if route.family == FAMILY_WAN22 else ltx
    real_load = module.load
    monkeypatch.setattr(module, "load", lambda r, **kw: real_load(r, **{**kw, "dtype": torch.float32}))
    storage.write("uploads/u/selfie", image_bytes(40, 48, seed=5), content_type="image/png")
    runner = make_runner(model_root=tiny_model_root, device="cpu")
    job = make_job(
        route=route, width=32, height=32, num_frames=9, image_key="uploads/u/selfie" if with_image else None
    )

    terminal = runner.run(job)

    assert terminal.kind == "completed", terminal
    assert decoded_frames(storage.root / job.video_key).shape == (9, 32, 32, 3)
    model = next(iter(runner.models.values()))
    if route.family == FAMILY_WAN22:
        assert model.t2v.config.expand_timesteps and model.i2v.config.expand_timesteps
        assert model.i2v.transformer is model.t2v.transformer  # one set of weights for both
        assert model.t2v.vae.dtype == torch.float32
        assert type(model.pipeline_for(job)).__name__ == (
            "WanImageToVideoPipeline" if with_image else "WanPipeline"
        )
    else:
        assert type(model.pipeline_for(job)).__name__ == "LTXConditionPipeline"


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_a_distilled_ltx_checkpoint_runs_its_given_timesteps_end_to_end(
    make_runner, storage, tiny_model_root, tmp_path, monkeypatch, with_image
):
    import functools
    import shutil

    model_root = tmp_path / "models"
    shutil.copytree(tiny_model_root / "ltx-tiny", model_root / "ltx-0.9.7-distilled-tiny")
    real_load = ltx.load
    monkeypatch.setattr(ltx, "load", lambda r, **kw: real_load(r, **{**kw, "dtype": torch.float32}))
    storage.write("uploads/u/selfie", image_bytes(40, 48, seed=5), content_type="image/png")
    runner = make_runner(model_root=model_root, device="cpu")
    route = ltx_route(checkpoint="ltx-0.9.7-distilled-tiny", width=32, height=32, frames=9)
    job = make_job(
        route=route, width=32, height=32, num_frames=9, image_key="uploads/u/selfie" if with_image else None
    )
    model = runner.load_model(route)
    called: list[dict] = []
    timesteps: list[list[float]] = []
    real_call_kwargs, real_set_timesteps = model.call_kwargs, model.pipe.scheduler.set_timesteps

    def call_kwargs(*args, **kwargs):
        called.append(real_call_kwargs(*args, **kwargs))
        return called[-1]

    @functools.wraps(real_set_timesteps)  # the pipeline inspects its signature
    def set_timesteps(*args, **kwargs):
        real_set_timesteps(*args, **kwargs)
        timesteps.append(model.pipe.scheduler.timesteps.tolist())

    monkeypatch.setattr(model, "call_kwargs", call_kwargs)
    monkeypatch.setattr(model.pipe.scheduler, "set_timesteps", set_timesteps)

    terminal = runner.run(job)

    assert terminal.kind == "completed", terminal
    assert model.recipe is ltx.DISTILLED
    assert {name: called[0][name] for name in DISTILLED_KWARGS} == DISTILLED_KWARGS
    assert timesteps and len(timesteps[-1]) == 8 and timesteps[-1][0] == pytest.approx(1000)
    assert decoded_frames(storage.root / job.video_key).shape == (9, 32, 32, 3)


def test_a_real_route_refuses_bad_input_before_loading(make_runner, tiny_model_root):
    runner = make_runner(model_root=tiny_model_root)
    job = make_job(route=ltx_route(checkpoint="ltx-tiny"), width=768, height=500, num_frames=121)
    terminal = runner.run(job)
    assert (terminal.reason_code, terminal.retryable) == (BAD_INPUT, False)
    assert runner.models == {}


def test_diffusers_is_pinned_to_the_installed_minor_version():
    """The hooks the worker uses move between diffusers releases: pyproject pins one minor version."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    (pin,) = (
        Requirement(line)
        for line in pyproject["project"]["optional-dependencies"]["gpu"]
        if Requirement(line).name == "diffusers"
    )
    assert any(spec.operator == "<" for spec in pin.specifier)
    assert pin.specifier.contains(version("diffusers"))
    assert not pin.specifier.contains("0.43.0")
