"""Issue 12 item 1: compiled routes are warmed up per shape at preload, and users' LoRAs are hot-swapped
into one adapter slot on them (no recompilation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpu_worker import pipelines, speedups
from gpu_worker.runner import LoraAdapters, uses_lora_hotswap, warmup_shapes_for
from gpu_worker.settings import WorkerSettings, warmup_shapes
from tests.fixtures.gpu import decoded_frames, make_job, tiny_route

COMPILED = {"compile_blocks": True}


def _lora(rank: int, seed: int) -> bytes:
    """A random LoRA of `rank` for the tiny text-to-video transformer (as diffusers saves a Wan LoRA)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save

    from gpu_worker.pipelines.tiny_wan import build_transformer

    transformer = build_transformer(16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(
            LoraConfig(
                r=rank,
                lora_alpha=rank,
                init_lora_weights=False,
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            )
        )
    state = get_peft_model_state_dict(transformer)
    return save({f"transformer.{key}": value.contiguous() for key, value in state.items()})


@pytest.fixture
def no_compile(monkeypatch):
    """compile_blocks without compiling (the blocks' forwards are wrapped by an identity)."""
    monkeypatch.setattr(speedups.torch, "compile", lambda fn, **options: fn)


@pytest.fixture
def transformer_calls(monkeypatch):
    """The hidden-state shapes of every transformer call of the models loaded from now on."""
    calls: list[tuple[int, ...]] = []
    real_load = pipelines.load_model

    def load_model(route, **kwargs):
        model = real_load(route, **kwargs)
        for pipe in (model.t2v, model.i2v):
            pipe.transformer.register_forward_pre_hook(
                lambda module, args, kwargs: calls.append(tuple(kwargs["hidden_states"].shape)),
                with_kwargs=True,
            )
        return model

    monkeypatch.setattr(pipelines, "load_model", load_model)
    return calls


# --- Warm-up --------------------------------------------------------------------------------------


def test_a_compiled_route_is_warmed_up_with_one_step_per_shape_at_preload(
    make_runner, no_compile, transformer_calls
):
    route = tiny_route(speed_profile=COMPILED)  # 3 steps, guidance 5 (two passes a step), image-to-video
    runner = make_runner(warmup_shapes=[(32, 32, 9), (48, 32, 9)])

    assert runner.preload([route]) == ["tiny-wan"]

    # one step per shape: a conditional and an unconditional pass, latents (B, C, F, H, W) of each shape
    assert [shape[2:] for shape in transformer_calls] == [(3, 4, 4)] * 2 + [(3, 4, 6)] * 2
    assert list(runner.warmups["tiny-wan"]) == ["32x32x9", "48x32x9"]
    assert all(seconds >= 0 for seconds in runner.warmups["tiny-wan"].values())
    # the warm-up changed nothing a job sees: the job runs as usual on the warmed pipeline
    transformer_calls.clear()
    assert runner.run(make_job(route=route)).kind == "completed"
    assert len(transformer_calls) == 2 * route.steps


def test_no_warm_up_without_compile_blocks(make_runner, transformer_calls):
    runner = make_runner()
    assert runner.preload([tiny_route(speed_profile={"cache": "first_block"})]) == ["tiny-wan"]
    assert transformer_calls == [] and runner.warmups == {}


def test_a_failed_warm_up_is_logged_and_the_route_stays_loaded(make_runner, no_compile, caplog):
    runner = make_runner(
        warmup_shapes=[(33, 32, 9)]
    )  # not a multiple of the family's size: the pipeline refuses
    assert runner.preload([tiny_route(speed_profile=COMPILED)]) == ["tiny-wan"]
    assert "could not warm up route tiny-wan" in caplog.text


def test_the_default_warm_up_shapes_are_the_native_size_in_both_orientations():
    assert warmup_shapes_for(tiny_route(width=1280, height=704, frames=121)) == [
        (1280, 704, 121),
        (704, 1280, 121),
    ]
    assert warmup_shapes_for(tiny_route()) == [(64, 64, 17)]  # square: one
    assert warmup_shapes_for(tiny_route(), [(32, 32, 9), (32, 32, 9)]) == [(32, 32, 9)]


def test_warm_up_and_hotswap_settings():
    settings = WorkerSettings.from_env(
        {"GPU_WARMUP_SHAPES": " 704x1280x121, 1280X704x121 ", "GPU_LORA_HOTSWAP_RANK": "128"}
    )
    assert settings.warmup_shapes == ((704, 1280, 121), (1280, 704, 121))
    assert settings.lora_hotswap_rank == 128
    defaults = WorkerSettings.from_env({})
    assert defaults.warmup_shapes == () and defaults.lora_hotswap_rank == 64
    for bad in ("704x1280", "704x1280x0", "axbxc"):
        with pytest.raises(ValueError, match="GPU_WARMUP_SHAPES"):
            warmup_shapes(bad)


# --- LoRA hot-swap --------------------------------------------------------------------------------


def test_only_a_compiled_route_that_takes_loras_hot_swaps():
    assert uses_lora_hotswap(tiny_route(speed_profile=COMPILED))
    assert not uses_lora_hotswap(tiny_route())
    assert not uses_lora_hotswap(tiny_route(speed_profile=COMPILED, lora_stacking=False))


def test_on_a_compiled_route_a_second_users_lora_is_hot_swapped_into_the_same_slot(
    make_runner, storage, no_compile
):
    route = tiny_route(speed_profile=COMPILED)
    storage.write("characters/c1/lora", _lora(4, 1), content_type="application/octet-stream")
    storage.write("characters/c2/lora", _lora(8, 2), content_type="application/octet-stream")
    runner = make_runner()
    jobs = {
        "base": make_job(route=route, seed=3),
        "first": make_job(route=route, seed=3, lora_key="characters/c1/lora"),
        "second": make_job(route=route, seed=3, lora_key="characters/c2/lora"),
        "base_after": make_job(route=route, seed=3),
        "first_again": make_job(route=route, seed=3, lora_key="characters/c1/lora"),
    }
    slots = {}
    for name, job in jobs.items():
        assert runner.run(job).kind == "completed"
        pipe = runner.models[("tiny-wan", "tiny-wan", "")].t2v
        layer = pipe.transformer.blocks[0].attn1.to_q
        slots[name] = (
            list(pipe.transformer.peft_config) if hasattr(pipe.transformer, "peft_config") else [],
            layer.lora_A["soul_id"].weight.detach().clone() if hasattr(layer, "lora_A") else None,
        )
    frames = {name: decoded_frames(storage.root / job.video_key) for name, job in jobs.items()}

    # one slot, padded to the hot-swap rank, its weights replaced by the second user's
    assert slots["first"][0] == slots["second"][0] == ["soul_id"]
    assert slots["first"][1].shape[0] == slots["second"][1].shape[0] == 64
    assert not torch.equal(slots["first"][1], slots["second"][1])
    assert runner.lora.active(pipe) == [] and runner.lora.hotswap_key(pipe) == "characters/c1/lora"
    # each LoRA changes the output its own way; a job without one runs on the base weights (scale 0)
    assert not np.array_equal(frames["base"], frames["first"])
    assert not np.array_equal(frames["first"], frames["second"])
    assert np.array_equal(frames["base"], frames["base_after"])
    assert np.array_equal(frames["first"], frames["first_again"])


def test_a_lora_above_the_slots_rank_gets_a_fresh_slot_of_its_rank(make_runner, storage, no_compile):
    route = tiny_route(speed_profile=COMPILED)
    storage.write("characters/c1/lora", _lora(4, 1), content_type="application/octet-stream")
    storage.write("characters/c2/lora", _lora(16, 2), content_type="application/octet-stream")
    runner = make_runner(lora_hotswap_rank=8)
    ranks = []
    for key in ("characters/c1/lora", "characters/c2/lora", "characters/c1/lora"):
        assert runner.run(make_job(route=route, lora_key=key)).kind == "completed"
        pipe = runner.models[("tiny-wan", "tiny-wan", "")].t2v
        ranks.append(pipe.transformer.blocks[0].attn1.to_q.lora_A["soul_id"].weight.shape[0])
    assert ranks == [8, 16, 16]  # reloaded once at the larger rank, then swapped within it


def test_hot_swapping_a_lora_into_compiled_blocks_does_not_recompile(storage):
    from torch._dynamo.testing import CompileCounter

    from gpu_worker.contract import SpeedProfile
    from gpu_worker.pipelines.tiny_wan import build_pipelines

    torch._dynamo.reset()
    storage.write("characters/c1/lora", _lora(4, 1), content_type="application/octet-stream")
    storage.write("characters/c2/lora", _lora(8, 2), content_type="application/octet-stream")
    pipe, _ = build_pipelines()
    lora = LoraAdapters(storage, hotswap_rank=16)
    counter = CompileCounter()

    def run() -> torch.Tensor:
        with torch.no_grad():
            return pipe(
                prompt="a face",
                height=32,
                width=32,
                num_frames=5,
                num_inference_steps=1,
                guidance_scale=1.0,
                output_type="latent",
                generator=torch.Generator("cpu").manual_seed(0),
            ).frames

    lora.apply(pipe, "characters/c1/lora", 1.0, hotswap=True)
    speedups.apply_speedups(pipe, SpeedProfile(compile_blocks=True), compile_options={"backend": counter})
    first = run()
    compiled = counter.frame_count
    assert compiled >= 1

    lora.apply(pipe, "characters/c2/lora", 1.0, hotswap=True)
    second = run()
    lora.apply(pipe, "characters/c2/lora", 0.5, hotswap=True)
    half = run()
    lora.apply(pipe, None, 1.0, hotswap=True)
    base = run()

    assert counter.frame_count == compiled  # swaps, scales and the base weights: no recompilation
    assert not torch.equal(first, second) and not torch.equal(second, half) and not torch.equal(half, base)

    # the counter does see a recompilation: plain adapters (compile off's way) change the blocks' graph
    lora.apply(pipe, "characters/c1/lora", 1.0)
    run()
    assert counter.frame_count > compiled
    torch._dynamo.reset()
