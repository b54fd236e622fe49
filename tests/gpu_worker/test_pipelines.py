"""The real routes (Wan 2.2 TI2V-5B, LTX-Video) without their weights: argument building and input
checks, a clear error for a missing folder or device, and their loading code run end to end on tiny
random checkpoints saved in their diffusers layout."""

from __future__ import annotations

import functools

import pytest
import torch

from gpu_worker.contract import BAD_INPUT, CANCELED, FAMILY_LTX, FAMILY_WAN22, MODEL_UNAVAILABLE, RouteSpec
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
    with pytest.raises(ValueError, match=f"0.9.7 distilled recipe: {message}"):
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
        # CINEMA's refine pass on the checkpoint's own scheduler
        wan22_route(
            checkpoint="wan22-tiny",
            width=32,
            height=32,
            frames=9,
            steps=2,
            refine_steps=2,
            refine_strength=0.5,
        ),
        ltx_route(checkpoint="ltx-tiny", width=32, height=32, frames=9, steps=2, guidance=3.0),
    ],
    ids=["wan22", "wan22-refine", "ltx"],
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
    assert terminal.timings["render"]["refine_steps"] == route.refine_steps
    assert ("denoise_refine" in terminal.timings) is bool(route.refine_steps)
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
    # no latent_upsampler/ in the folder: one stage at the job's size, and the timings say so
    assert not model.two_stage and len(called) == 1 and (called[0]["width"], called[0]["height"]) == (32, 32)
    assert terminal.timings["ltx_flow"] == "one-stage"
    assert not {"denoise_low_res", "upsample", "denoise_refine"} & set(terminal.timings)


# --- LTX two-stage flow: low resolution, latent upsampler x2, refine (diffusers' ltx_video.md) ----------


def ltx_folder(tiny_model_root, model_root, name: str, *, upsampler: bool):
    """ltx-tiny copied to `model_root/name`, with the tiny latent upsampler as its latent_upsampler/."""
    import shutil

    shutil.copytree(tiny_model_root / "ltx-tiny", model_root / name)
    if upsampler:
        shutil.copytree(tiny_model_root / "ltx-tiny-latent-upsampler", model_root / name / "latent_upsampler")
    return model_root


@pytest.fixture
def float32_ltx(monkeypatch):
    real_load = ltx.load
    monkeypatch.setattr(ltx, "load", lambda r, **kw: real_load(r, **{**kw, "dtype": torch.float32}))


def two_stage_route(checkpoint: str = "ltx-0.9.7-distilled-tiny") -> RouteSpec:
    return ltx_route(checkpoint=checkpoint, width=96, height=64, frames=9)


def count_transformer_steps(model) -> list[tuple[int, ...]]:
    """The shapes of the transformer's inputs, one per call (guidance 1.0: one call per step)."""
    calls: list[tuple[int, ...]] = []
    model.pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["hidden_states"].shape)), with_kwargs=True
    )
    return calls


def test_the_two_stage_recipe_is_the_documented_one():
    """ltx_video.md's 0.9.7 and 0.9.8 distilled examples: the refine call and the upsampling arguments."""
    assert ltx.DISTILLED.refine_timesteps == (1000, 909, 725, 421, 0)
    assert ltx.refine_steps(ltx.DISTILLED) == 4  # denoise_strength 0.999: "4 inference steps out of 5"
    assert (ltx.DISTILLED.adain_factor, ltx.DISTILLED.tone_map_compression_ratio) == (1.0, 0.0)
    assert (ltx.DISTILLED_098.adain_factor, ltx.DISTILLED_098.tone_map_compression_ratio) == (1.0, 0.6)
    assert ltx.recipe_for(ltx_route(checkpoint="LTX-Video-0.9.8-13B-distilled")) is ltx.DISTILLED_098
    assert ltx.BASE.refine_timesteps is None
    # 2/3 of the job's size rounded down to 32: the shipped 1216x704 renders at 800x448, refines at 1600x896
    assert ltx.low_res_size(1216, 704, 32) == (800, 448)
    assert ltx.low_res_size(704, 1216, 32) == (448, 800)
    assert ltx.low_res_size(32, 32, 32) == (32, 32)

    job = make_job(route=ltx_route(), width=1216, height=704, num_frames=121, aspect_ratio="16:9")
    latents = torch.zeros(1)
    kwargs = ltx.build_refine_kwargs(
        job, latents, size=(1600, 896), image="the selfie", generator=None, callback=_callback
    )
    assert kwargs["latents"] is latents and (kwargs["width"], kwargs["height"]) == (1600, 896)
    assert (kwargs["timesteps"], kwargs["denoise_strength"]) == ([1000, 909, 725, 421, 0], 0.999)
    assert {name: kwargs[name] for name in DISTILLED_KWARGS if name != "timesteps"} == {
        name: value for name, value in DISTILLED_KWARGS.items() if name != "timesteps"
    }
    assert kwargs["conditions"][0].image == "the selfie" and kwargs["output_type"] == "latent"


@pytest.mark.parametrize(
    ("checkpoint", "recipe", "with_image", "tone_maps"),
    [
        ("ltx-0.9.7-distilled-tiny", ltx.DISTILLED, False, []),
        ("ltx-0.9.8-distilled-tiny", ltx.DISTILLED_098, True, [0.6]),
    ],
    ids=["0.9.7-text", "0.9.8-image"],
)
def test_a_distilled_ltx_checkpoint_with_a_latent_upsampler_runs_two_stages_end_to_end(
    make_runner,
    storage,
    tiny_model_root,
    tmp_path,
    float32_ltx,
    monkeypatch,
    checkpoint,
    recipe,
    with_image,
    tone_maps,
):
    model_root = ltx_folder(tiny_model_root, tmp_path / "models", checkpoint, upsampler=True)
    storage.write("uploads/u/selfie", image_bytes(120, 80, seed=5), content_type="image/png")
    runner = make_runner(model_root=model_root, device="cpu")
    route = two_stage_route(checkpoint)
    job = make_job(
        route=route, width=96, height=64, num_frames=9, image_key="uploads/u/selfie" if with_image else None
    )
    model = runner.load_model(route)
    steps = count_transformer_steps(model)
    sizes, timesteps, adain, tone_mapped = [], [], [], []
    real_prepare, real_set_timesteps = model.pipe.prepare_latents, model.pipe.scheduler.set_timesteps
    real_adain, real_tone_map = model.upsample_pipe.adain_filter_latent, model.upsample_pipe.tone_map_latents

    def prepare_latents(*args, **kwargs):
        sizes.append((kwargs["width"], kwargs["height"], kwargs["latents"] is not None))
        return real_prepare(*args, **kwargs)

    @functools.wraps(real_set_timesteps)  # the pipeline inspects its signature
    def set_timesteps(*args, **kwargs):
        real_set_timesteps(*args, **kwargs)
        timesteps.append(model.pipe.scheduler.timesteps.tolist())

    def adain_filter_latent(latents, reference, factor=1.0):
        adain.append(factor)
        return real_adain(latents, reference, factor)

    def tone_map_latents(latents, compression):
        tone_mapped.append(compression)
        return real_tone_map(latents, compression)

    monkeypatch.setattr(model.pipe, "prepare_latents", prepare_latents)
    monkeypatch.setattr(model.pipe.scheduler, "set_timesteps", set_timesteps)
    monkeypatch.setattr(model.upsample_pipe, "adain_filter_latent", adain_filter_latent)
    monkeypatch.setattr(model.upsample_pipe, "tone_map_latents", tone_map_latents)

    terminal = runner.run(job)

    assert terminal.kind == "completed", terminal
    assert model.two_stage and model.recipe is recipe
    # 1. 2/3 of 96x64 rounded down to 32; 3. twice that, from the upsampled latents
    assert sizes == [(64, 32, False), (128, 64, True)]
    assert [len(t) for t in timesteps] == [8, 5] and timesteps[1] == pytest.approx([1000, 909, 725, 421, 0])
    # 8 steps, then the last 4 refine timesteps; the refine tokens are 4x the low-resolution ones
    assert len(steps) == 12 and steps[8][1] == 4 * steps[0][1]
    assert adain == [1.0] and tone_mapped == tone_maps
    # 4. decoded at 128x64, delivered at the job's 96x64
    assert decoded_frames(storage.root / job.video_key).shape == (9, 64, 96, 3)
    timings = terminal.timings
    assert timings["ltx_flow"] == "two-stage"
    parts = [timings["denoise_low_res"], timings["upsample"], timings["denoise_refine"]]
    assert all(part > 0 for part in parts) and sum(parts) <= timings["denoise"]


def test_progress_is_monotonic_over_both_ltx_passes(
    make_runner, tiny_model_root, tmp_path, float32_ltx, event_log
):
    model_root = ltx_folder(tiny_model_root, tmp_path / "models", "ltx-0.9.7-distilled-tiny", upsampler=True)
    runner = make_runner(model_root=model_root, device="cpu")  # progress_interval 0: every step reports
    job = make_job(route=two_stage_route(), width=96, height=64, num_frames=9)

    terminal = runner.run(job)

    assert terminal.kind == "completed", terminal
    progress = [e.progress for e in event_log.of(job.job_id) if e.kind == "progress"]
    assert len(progress) == 12  # 8 low-resolution steps and 4 refine steps
    assert all(later > earlier for earlier, later in zip(progress, progress[1:], strict=False))
    assert progress[0] == pytest.approx(0.05 + 0.8 / 12, abs=1e-4)
    assert progress[-1] == pytest.approx(0.85)  # where decoding starts


def test_a_cancel_during_the_ltx_refine_pass_stops_it(
    make_runner, storage, tiny_model_root, tmp_path, float32_ltx, event_log, cancel_flags
):
    model_root = ltx_folder(tiny_model_root, tmp_path / "models", "ltx-0.9.7-distilled-tiny", upsampler=True)
    runner = make_runner(model_root=model_root, device="cpu")
    job = make_job(route=two_stage_route(), width=96, height=64, num_frames=9)
    model = runner.load_model(job.route)
    steps = count_transformer_steps(model)
    first_refine_step = 0.05 + 0.8 * 9 / 12

    def cancel_in_refine(event):
        if event.kind == "progress" and event.progress >= first_refine_step - 1e-6:
            cancel_flags.set(job.job_id)

    event_log.listeners.append(cancel_in_refine)

    terminal = runner.run(job)

    assert (terminal.kind, terminal.reason_code) == ("failed", CANCELED)
    assert len(steps) == 9  # all 8 low-resolution steps, then the first refine step, and no more
    assert steps[8][1] == 4 * steps[0][1]  # that step was the refine pass's
    assert terminal.timings["ltx_flow"] == "two-stage" and terminal.timings["denoise_refine"] > 0
    assert "decode" not in terminal.timings
    assert not (storage.root / job.video_key).exists()


def test_a_two_stage_ltx_route_warms_up_both_passes(make_runner, tiny_model_root, tmp_path, float32_ltx):
    model_root = ltx_folder(tiny_model_root, tmp_path / "models", "ltx-0.9.7-distilled-tiny", upsampler=True)
    runner = make_runner(model_root=model_root, device="cpu", warmup_shapes=[(96, 64, 9)])
    route = two_stage_route()
    model = runner.load_model(route)
    steps = count_transformer_steps(model)

    assert list(runner.warm_up(model, route)) == ["96x64x9"]

    assert len(steps) == 2 and steps[1][1] == 4 * steps[0][1]  # one step at each pass's shape


def test_a_base_ltx_checkpoint_ignores_a_latent_upsampler(
    make_runner, tiny_model_root, tmp_path, float32_ltx
):
    model_root = ltx_folder(tiny_model_root, tmp_path / "models", "ltx-tiny", upsampler=True)
    route = ltx_route(checkpoint="ltx-tiny", width=32, height=32, frames=9, steps=2, guidance=3.0)

    model = make_runner(model_root=model_root, device="cpu").load_model(route)

    assert model.recipe is ltx.BASE and not model.two_stage


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
