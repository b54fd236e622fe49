"""Speed profiles (gpu_worker/speedups.py): validated settings, applied through diffusers' hooks on the
Wan 2.2 route's loading code (a tiny saved checkpoint, CPU), and cached runs through the real runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpu_worker.contract import FAMILY_WAN22
from gpu_worker.pipelines import wan22
from gpu_worker.speedups import SpeedProfile, apply_speedups, reset_speedups
from tests.fixtures.gpu import decoded_frames, make_job, tiny_route


def wan22_tiny_route(**overrides):
    fields = dict(
        name="wan22-tiny",
        family=FAMILY_WAN22,
        checkpoint="wan22-tiny",
        width=32,
        height=32,
        fps=8,
        frames=9,
        steps=6,
        guidance=5.0,
    )
    return tiny_route(**{**fields, **overrides})


@pytest.fixture
def wan_runner(make_runner, tiny_model_root, monkeypatch):
    """The runner on the tiny Wan 2.2-shaped checkpoint, loaded through wan22.load (float32 on the CPU)."""
    real_load = wan22.load
    monkeypatch.setattr(wan22, "load", lambda r, **kw: real_load(r, **{**kw, "dtype": torch.float32}))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    yield make_runner(model_root=tiny_model_root, device="cpu")
    torch.backends.cuda.matmul.allow_tf32 = tf32  # process-wide: as it was before the test


def loaded_pipe(runner, job):
    assert runner.run(job).kind == "completed"
    return next(iter(runner.models.values())).t2v


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    return calls


# --- The profile --------------------------------------------------------------------------------


def test_a_profile_round_trips_through_its_json_form_with_every_parameter_filled_in():
    profile = SpeedProfile.from_dict(
        {"attention_backend": "_NATIVE_CUDNN", "compile_blocks": True, "cache": "first_block", "tf32": True}
    )

    assert profile.attention_backend == "_native_cudnn"
    assert profile.to_dict() == {
        "attention_backend": "_native_cudnn",
        "compile_blocks": True,
        "cache": "first_block",
        "cache_params": {"threshold": 0.05},
        "vae_tiling": False,
        "tf32": True,
        "vae_decode_dtype": None,
        "cudnn_benchmark": False,
    }
    assert SpeedProfile.from_dict(profile.to_dict()) == profile
    fast_decode = SpeedProfile.from_dict({"vae_decode_dtype": "bfloat16", "cudnn_benchmark": True})
    assert (fast_decode.vae_decode_dtype, fast_decode.cudnn_benchmark) == ("bfloat16", True)
    assert SpeedProfile.from_dict(fast_decode.to_dict()) == fast_decode
    assert SpeedProfile.from_dict(None) == SpeedProfile.from_dict({}) == SpeedProfile()
    mag = SpeedProfile.from_dict({"cache": "mag", "cache_params": {"mag_ratios": [1.0, 0.99, 0.98]}})
    assert SpeedProfile.from_dict(mag.to_dict()).cache_params["mag_ratios"] == (1.0, 0.99, 0.98)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"attention_backend": "flash_hub"}, "attention_backend must be"),  # fetches code at run time
        ({"attention_backend": "fastest"}, "attention_backend must be"),
        ({"compile_blocks": "yes"}, "compile_blocks must be true or false"),
        ({"vae_tiling": 1}, "vae_tiling must be true or false"),
        ({"cudnn_benchmark": "on"}, "cudnn_benchmark must be true or false"),
        ({"vae_decode_dtype": "float16"}, "vae_decode_dtype must be null or one of float32, bfloat16"),
        ({"vae_decode_dtype": "bf16"}, "vae_decode_dtype must be null or one of"),
        ({"cache": "teacache"}, "cache must be null or one of"),
        ({"cache": "first_block", "cache_params": {"threshold": -0.1}}, "threshold .* must be a number > 0"),
        ({"cache": "first_block", "cache_params": {"threshold": True}}, "must be a number > 0"),
        ({"cache": "first_block", "cache_params": {"interval": 2}}, "unknown cache_params"),
        ({"cache": "taylorseer", "cache_params": {"cache_interval": 0}}, "must be an integer >= 1"),
        ({"cache": "taylorseer", "cache_params": {"max_order": 9}}, r"must be an integer in 1\.\.4"),
        ({"cache": "mag"}, "needs cache_params.mag_ratios"),
        ({"cache": "mag", "cache_params": {"mag_ratios": [1.0, "x"]}}, "list of at least 2 numbers"),
        ({"cache_params": {"threshold": 0.1}}, "no cache is chosen"),
        ({"cache": "first_block", "cache_params": [("threshold", 0.1)]}, "cache_params must be a mapping"),
        ({"turbo": True}, "unknown speed profile fields: turbo"),
        ("compile", "must be a mapping"),
    ],
)
def test_a_bad_profile_is_refused_with_a_clear_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        SpeedProfile.from_dict(data)


# --- Applying it to the Wan 2.2 pipeline -------------------------------------------------------------


def test_each_setting_is_applied_and_reset_takes_it_off(wan_runner):
    from diffusers.hooks import FirstBlockCacheConfig

    pipe = loaded_pipe(wan_runner, make_job(route=wan22_tiny_route(steps=1), width=32, height=32))
    profile = SpeedProfile(
        attention_backend="native",
        cache="first_block",
        cache_params={"threshold": 0.2},
        vae_tiling=True,
        tf32=True,
    )

    applied = apply_speedups(pipe, profile)

    assert applied == {
        "tf32": True,
        "cudnn_benchmark": False,
        "attention_backend": "native",
        "cache": "first_block",
        "cache_params": {"threshold": 0.2},
        "compile_blocks": False,
        "vae_tiling": True,
        "vae_decode_dtype": "float32",  # as wan22.load loads the VAE
    }
    processors = [block.attn1.processor for block in pipe.transformer.blocks]
    assert {p._attention_backend.value for p in processors} == {"native"}
    assert isinstance(pipe.transformer._cache_config, FirstBlockCacheConfig)
    assert pipe.transformer._cache_config.threshold == 0.2
    assert pipe.vae.use_tiling is True
    assert torch.backends.cuda.matmul.allow_tf32 is True

    # Applying another profile replaces the cache instead of failing on "already enabled".
    apply_speedups(pipe, profile.replace(cache="taylorseer"))
    assert type(pipe.transformer._cache_config).__name__ == "TaylorSeerCacheConfig"

    reset_speedups(pipe)
    assert not pipe.transformer.is_cache_enabled
    assert {p._attention_backend.value for p in processors} == {"native"}  # diffusers' default
    assert pipe.vae.use_tiling is False
    assert apply_speedups(pipe, SpeedProfile())["attention_backend"] == "native"


@pytest.mark.parametrize(
    ("profile", "skips"),
    [
        (SpeedProfile(cache="first_block", cache_params={"threshold": 10.0}), True),
        (SpeedProfile(cache="taylorseer", cache_params={"cache_interval": 2}), True),
        (SpeedProfile(cache="taylorseer", cache_params={"cache_interval": 2, "lite": False}), True),
        (SpeedProfile(cache="mag", cache_params={"mag_ratios": [1.0] * 6, "threshold": 1.0}), True),
        (SpeedProfile(vae_tiling=True, attention_backend="native"), False),
    ],
    ids=["first_block", "taylorseer_lite", "taylorseer_blocks", "mag", "no_cache"],
)
def test_a_cached_run_through_the_runner_skips_blocks_and_keeps_the_output_shape(
    wan_runner, storage, profile, skips
):
    route = wan22_tiny_route()
    pipe = loaded_pipe(wan_runner, make_job(route=route, width=32, height=32))
    # The last block's feed-forward runs only when the block is computed (not cached or predicted).
    calls = count_calls(pipe.transformer.blocks[-1].ffn)
    wan_runner.run(make_job(route=route, width=32, height=32))
    full = calls[0]
    assert full == 2 * route.steps  # conditional and unconditional pass at every step

    apply_speedups(pipe, profile, num_inference_steps=route.steps)
    calls[0] = 0
    job = make_job(route=route, width=32, height=32, num_frames=9)
    terminal = wan_runner.run(job)

    assert terminal.kind == "completed", terminal
    assert (terminal.outputs["video"]["width"], terminal.outputs["video"]["num_frames"]) == (32, 9)
    assert decoded_frames(storage.root / job.video_key).shape == (9, 32, 32, 3)
    assert (calls[0] < full) is skips
    assert calls[0] > 0


def test_cache_state_does_not_leak_from_one_job_into_the_next(wan_runner, storage):
    """The runner's `maybe_free_model_hooks()` resets the cache: the same job twice gives the same video."""
    route = wan22_tiny_route(steps=4)
    pipe = loaded_pipe(wan_runner, make_job(route=route, width=32, height=32))
    apply_speedups(pipe, SpeedProfile(cache="taylorseer", cache_params={"cache_interval": 2}))
    first, second = (make_job(route=route, width=32, height=32, seed=3) for _ in range(2))

    assert wan_runner.run(first).kind == wan_runner.run(second).kind == "completed"
    # The frames, not the files: each MP4's AI label (C2PA) has its own manifest id and signing time
    first_frames = decoded_frames(storage.root / first.video_key)
    assert np.array_equal(first_frames, decoded_frames(storage.root / second.video_key))


def compiled(block: torch.nn.Module) -> bool:
    return hasattr(block.__dict__.get("forward"), "_torchdynamo_orig_callable")


def test_compiled_blocks_give_the_eager_output_under_any_cache_and_can_be_dropped(wan_runner, monkeypatch):
    """Regional compilation through dynamo, fullgraph (the "eager" backend keeps the test fast on a CPU;
    the GPU benchmark compiles with inductor). The blocks compile once: a cache turned on afterwards
    wraps the compiled forwards and needs no recompilation."""
    route = wan22_tiny_route(steps=2)
    pipe = loaded_pipe(wan_runner, make_job(route=route, width=32, height=32))
    kwargs = dict(
        prompt="a man", height=32, width=32, num_frames=9, num_inference_steps=4, output_type="latent"
    )

    def latents():
        return pipe(**kwargs, generator=torch.Generator().manual_seed(1)).frames

    eager = latents()
    compiles = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiles.append(kw) or real_compile(fn, **kw))

    applied = apply_speedups(pipe, SpeedProfile(compile_blocks=True), compile_options={"backend": "eager"})
    assert applied["compile_blocks"] is True
    assert all(compiled(block) for block in pipe.transformer.blocks)
    options = {"fullgraph": True, "dynamic": False, "backend": "eager"}
    assert compiles == [options] * len(pipe.transformer.blocks)
    torch.testing.assert_close(latents(), eager)

    cached = SpeedProfile(compile_blocks=True, cache="taylorseer", cache_params={"cache_interval": 2})
    applied = apply_speedups(pipe, cached, compile_options={"backend": "eager"})
    assert (applied["compile_blocks"], applied["cache"]) == (True, "taylorseer")
    assert len(compiles) == len(pipe.transformer.blocks)  # not compiled again
    with_cache = latents()
    assert with_cache.shape == eager.shape and not torch.equal(with_cache, eager)
    reset_speedups(pipe)  # the cache off, the blocks still compiled
    assert all(compiled(block) for block in pipe.transformer.blocks)
    torch.testing.assert_close(latents(), eager)

    reset_speedups(pipe, uncompile=True)
    assert not any(compiled(block) for block in pipe.transformer.blocks)
    assert apply_speedups(pipe, SpeedProfile())["compile_blocks"] is False
    torch.testing.assert_close(latents(), eager)


# --- A route's profile, applied by the runner ------------------------------------------------------


def test_a_routes_speed_profile_is_applied_per_job_and_recorded_in_its_timings(wan_runner, event_log):
    profile = {"cache": "first_block", "cache_params": {"threshold": 0.2}, "vae_tiling": True}
    sped_up, plain = wan22_tiny_route(speed_profile=profile), wan22_tiny_route()
    jobs = [make_job(route=route, width=32, height=32) for route in (sped_up, plain, plain)]

    terminal = wan_runner.run(jobs[0])
    pipe = next(iter(wan_runner.models.values())).t2v
    assert (pipe.transformer.is_cache_enabled, pipe.vae.use_tiling) == (True, True)
    # What the backend stores with the generation: the event as sent, read back through the contract.
    [received] = [e for e in event_log.of(jobs[0].job_id) if e.is_terminal]
    assert (
        received.timings["speed_profile"]
        == terminal.timings["speed_profile"]
        == {
            "tf32": False,
            "cudnn_benchmark": False,
            "attention_backend": "native",
            "compile_blocks": False,
            "cache": "first_block",
            "cache_params": {"threshold": 0.2},
            "vae_tiling": True,
            "vae_decode_dtype": "float32",
        }
    )

    # The route loses its profile (same model): the pipeline goes back to diffusers' defaults, once.
    back = wan_runner.run(jobs[1])
    assert (pipe.transformer.is_cache_enabled, pipe.vae.use_tiling) == (False, False)
    assert (back.timings["speed_profile"]["cache"], back.timings["speed_profile"]["vae_tiling"]) == (
        None,
        False,
    )
    assert "speed_profile" not in wan_runner.run(jobs[2]).timings
