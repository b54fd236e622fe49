"""The VAE decode's speed settings of a route's speed profile (gpu_worker/speedups.py): `vae_decode_dtype`
(the decoder in bfloat16, the encoder as loaded, the weights as loaded restored exactly) and
`cudnn_benchmark` (cuDNN's algorithm search, warmed up per shape), each applied through the runner on the
Wan 2.2 route's loading code (a tiny saved checkpoint, CPU) and recorded in the job's timings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpu_worker import speedups
from gpu_worker.contract import FAMILY_WAN22
from gpu_worker.pipelines import wan22
from gpu_worker.pipelines.tiny_wan import decode_wan_latents
from gpu_worker.runner import WARM_UP_LATENT_FRAMES, warm_up_latents
from gpu_worker.speedups import SpeedProfile, apply_speedups, reset_speedups, set_vae_decode_dtype
from tests.fixtures.gpu import image_bytes, make_job, tiny_route


def wan22_tiny_route(**overrides):
    fields = dict(
        name="wan22-tiny",
        family=FAMILY_WAN22,
        checkpoint="wan22-tiny",
        width=32,
        height=32,
        fps=8,
        frames=9,
        steps=2,
        guidance=5.0,
    )
    return tiny_route(**{**fields, **overrides})


@pytest.fixture(autouse=True)
def process_wide_flags():
    """TF32 and cuDNN's benchmark mode are process-wide: as they were before each test."""
    tf32, benchmark = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = tf32, benchmark


@pytest.fixture
def wan_runner(make_runner, tiny_model_root, monkeypatch, storage):
    """The runner on the tiny Wan 2.2-shaped checkpoint, loaded through wan22.load (float32 on the CPU:
    the VAE in float32 as on a GPU)."""
    real_load = wan22.load
    monkeypatch.setattr(wan22, "load", lambda r, **kw: real_load(r, **{**kw, "dtype": torch.float32}))
    storage.write("uploads/u/selfie", image_bytes(48, 48, seed=3), content_type="image/png")
    return make_runner(model_root=tiny_model_root, device="cpu")


def i2v_job(route, **overrides):
    return make_job(route=route, width=32, height=32, num_frames=9, image_key="uploads/u/selfie", **overrides)


def dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {parameter.dtype for parameter in module.parameters()}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 clips."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- vae_decode_dtype -------------------------------------------------------------------------------


def test_a_bfloat16_decode_casts_the_decoder_only_and_is_recorded_in_the_timings(wan_runner, event_log):
    route = wan22_tiny_route(speed_profile={"vae_decode_dtype": "bfloat16"})
    job = i2v_job(route)

    terminal = wan_runner.run(job)  # image-to-video: the selfie goes through the (float32) encoder

    assert terminal.kind == "completed", terminal
    [received] = [e for e in event_log.of(job.job_id) if e.is_terminal]
    assert received.timings["speed_profile"]["vae_decode_dtype"] == "bfloat16"
    assert received.timings["speed_profile"]["cudnn_benchmark"] is False
    vae = next(iter(wan_runner.models.values())).i2v.vae
    assert dtypes(vae.decoder) == dtypes(vae.post_quant_conv) == {torch.bfloat16}
    assert dtypes(vae.encoder) == dtypes(vae.quant_conv) == {torch.float32}
    assert vae.dtype == torch.float32  # what the image-to-video pipeline casts the selfie to
    assert speedups.vae_decode_dtype(vae) == torch.bfloat16


def test_the_bfloat16_decode_is_close_to_the_float32_one_and_going_back_restores_the_weights_exactly(
    wan_runner,
):
    plain = wan22_tiny_route()
    assert wan_runner.run(i2v_job(plain)).kind == "completed"
    pipe = next(iter(wan_runner.models.values())).i2v
    vae = pipe.vae
    loaded = snapshot(vae.decoder)
    latents = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    full = decode_wan_latents(pipe, latents)

    applied = apply_speedups(pipe, SpeedProfile(vae_decode_dtype="bfloat16"))
    half = decode_wan_latents(pipe, latents)

    assert applied["vae_decode_dtype"] == "bfloat16"
    assert half.dtype == full.dtype == np.uint8 and half.shape == full.shape == (9, 32, 32, 3)
    assert not np.array_equal(half, full)
    assert psnr(half, full) > 30  # bfloat16 rounding, not a different picture

    # A profile without it (a route's profile edited, the runner's reset) puts the float32 weights back:
    # the exact values as loaded, not a bfloat16-rounded copy, and the same frames as before.
    assert apply_speedups(pipe, SpeedProfile())["vae_decode_dtype"] == "float32"
    assert all(torch.equal(value, loaded[key]) for key, value in vae.decoder.state_dict().items())
    np.testing.assert_array_equal(decode_wan_latents(pipe, latents), full)
    apply_speedups(pipe, SpeedProfile(vae_decode_dtype="bfloat16"))
    reset_speedups(pipe)
    assert dtypes(vae.decoder) == {torch.float32}
    assert all(torch.equal(value, loaded[key]) for key, value in vae.decoder.state_dict().items())


def test_the_runner_sets_the_decoder_back_when_the_route_loses_the_setting(wan_runner):
    fast = wan22_tiny_route(speed_profile={"vae_decode_dtype": "bfloat16"})
    assert wan_runner.run(i2v_job(fast)).kind == "completed"
    vae = next(iter(wan_runner.models.values())).i2v.vae
    assert dtypes(vae.decoder) == {torch.bfloat16}

    back = wan_runner.run(i2v_job(wan22_tiny_route()))

    assert back.kind == "completed"
    assert back.timings["speed_profile"]["vae_decode_dtype"] == "float32"
    assert dtypes(vae.decoder) == {torch.float32}


def test_a_decoder_loaded_in_bfloat16_can_run_in_float32_and_go_back():
    """As on the LTX route (its VAE loads in bfloat16): float32 is a lossless upcast, None the weights as
    loaded again."""
    from diffusers import AutoencoderKLWan

    from gpu_worker.pipelines.tiny_wan import wan22_tiny_configs

    vae = AutoencoderKLWan(**wan22_tiny_configs(64)["vae"]).to(torch.bfloat16)
    loaded = snapshot(vae.decoder)

    assert set_vae_decode_dtype(vae, "float32") == "float32"
    assert dtypes(vae.decoder) == {torch.float32} and dtypes(vae.encoder) == {torch.bfloat16}
    assert set_vae_decode_dtype(vae, "bfloat16") == "bfloat16"
    assert set_vae_decode_dtype(vae, None) == "bfloat16"
    assert all(torch.equal(value, loaded[key]) for key, value in vae.decoder.state_dict().items())
    with pytest.raises(ValueError, match="vae_decode_dtype must be"):
        set_vae_decode_dtype(vae, "float16")


def test_decoded_frames_are_converted_to_uint8_on_the_device_with_diffusers_bytes():
    """`video_to_uint8` (what the Wan decode returns) gives the bytes of diffusers' float frames
    (`postprocess_video(output_type="np")`) rounded by `video.frames_to_uint8`, for bfloat16 output too."""
    from diffusers.video_processor import VideoProcessor

    from gpu_worker import video
    from gpu_worker.pipelines.tiny_wan import video_to_uint8

    generator = torch.Generator().manual_seed(1)
    decoded = torch.rand(1, 3, 5, 24, 40, generator=generator) * 2.4 - 1.2  # beyond [-1, 1] too
    decoded[0, :, 0, 0, :4] = torch.tensor([-1.0, 1.0, 0.0, 1 / 255])  # the edges and a rounding case
    processor = VideoProcessor(vae_scale_factor=16)
    for tensor in (decoded, decoded.to(torch.bfloat16)):
        expected = video.frames_to_uint8(processor.postprocess_video(tensor.float(), output_type="np")[0])

        frames = video_to_uint8(tensor[0])

        assert frames.dtype == np.uint8 and frames.shape == (5, 24, 40, 3)
        np.testing.assert_array_equal(frames, expected)


# --- cudnn_benchmark ----------------------------------------------------------------------------------


def test_cudnn_benchmark_is_applied_and_recorded_and_a_profile_without_it_turns_it_off(wan_runner):
    torch.backends.cudnn.benchmark = False
    fast = wan22_tiny_route(speed_profile={"cudnn_benchmark": True, "vae_decode_dtype": "bfloat16"})

    terminal = wan_runner.run(i2v_job(fast))

    assert terminal.kind == "completed", terminal
    assert torch.backends.cudnn.benchmark is True
    assert (
        terminal.timings["speed_profile"]["cudnn_benchmark"],
        terminal.timings["speed_profile"]["vae_decode_dtype"],
    ) == (True, "bfloat16")

    back = wan_runner.run(i2v_job(wan22_tiny_route()))
    assert back.timings["speed_profile"]["cudnn_benchmark"] is False
    assert torch.backends.cudnn.benchmark is False


def test_a_cudnn_benchmark_route_is_warmed_up_with_a_decode_of_its_first_latent_frames_per_shape(
    make_runner, monkeypatch
):
    decoded: list[tuple[int, ...]] = []
    from gpu_worker.pipelines import tiny_wan

    real_decode = tiny_wan.TinyWanModel.decode

    def decode(self, pipe, latents, generator, **kwargs):
        decoded.append(tuple(latents.shape))
        return real_decode(self, pipe, latents, generator, **kwargs)

    monkeypatch.setattr(tiny_wan.TinyWanModel, "decode", decode)
    route = tiny_route(speed_profile={"cudnn_benchmark": True})  # no compile: warmed up for the search
    runner = make_runner(warmup_shapes=[(32, 32, 17), (48, 32, 17)])

    assert runner.preload([route]) == ["tiny-wan"]

    # 17 frames: 5 latent frames, the first 3 decoded (B, C, F, H, W) at each shape
    assert [shape[2:] for shape in decoded] == [(WARM_UP_LATENT_FRAMES, 4, 4), (WARM_UP_LATENT_FRAMES, 4, 6)]
    shapes = ["32x32x17", "48x32x17"]
    assert list(runner.warmups["tiny-wan"]) == list(runner.warmup_decodes["tiny-wan"]) == shapes
    assert all(
        runner.warmups["tiny-wan"][shape] >= seconds >= 0
        for shape, seconds in runner.warmup_decodes["tiny-wan"].items()
    )


def test_warm_up_latents_are_the_first_frames_of_video_latents_and_other_layouts_whole():
    video = torch.zeros(1, 48, 31, 44, 80)
    packed = torch.zeros(1, 3520, 128)
    assert warm_up_latents(video).shape == (1, 48, WARM_UP_LATENT_FRAMES, 44, 80)
    assert warm_up_latents(packed) is packed


# --- The runner's compile options -------------------------------------------------------------------------


def test_the_runner_compiles_a_routes_blocks_with_its_compile_options(make_runner, monkeypatch):
    options: list[dict] = []
    monkeypatch.setattr(speedups.torch, "compile", lambda fn, **kw: options.append(kw) or fn)
    runner = make_runner(compile_options={"backend": "eager"})

    terminal = runner.run(make_job(route=tiny_route(speed_profile={"compile_blocks": True})))

    assert terminal.kind == "completed", terminal
    assert options and all(kw == {"fullgraph": True, "dynamic": False, "backend": "eager"} for kw in options)
    assert terminal.timings["speed_profile"]["compile_blocks"] is True
