"""tiny-wan: a random-weight, Wan-shaped text/image-to-video pipeline built from configs.

It runs on a CPU in well under a second, needs no download and no network (the tokenizer is built
in-process), and takes every code path of a real route: the text encoder, the denoising loop with
callbacks, LoRA adapters, the VAE decode. Text-to-video is a `WanPipeline` (Wan 2.1 shape); image-to-video
is a `WanImageToVideoPipeline` whose transformer takes the Wan 2.1 I2V input (in_channels=36: latents,
mask and image condition) without an image encoder. Both share the tokenizer, text encoder and VAE.

The weights come from a fixed seed, so every process builds the same model and the same job gives the
same frames. The output looks like coloured noise with motion, which is what random weights produce.
Sizes follow diffusers' own fast tests (reference/gpu.md §3); keep the VAE tiny, its decode dominates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from gpu_worker.contract import GenerationJob, RouteSpec
from gpu_worker.pipelines import check_route_inputs
from gpu_worker.pipelines.refine import denoise_and_refine

WEIGHTS_SEED = 0
MAX_SEQUENCE_LENGTH = 32
TEXT_DIM = 32
# Words of the shot planner's prompts; anything else is <unk>. Ids: pad=0, eos=1, unk=2 (as in T5).
_WORDS = (
    "a an the of in on with and at to by from person man woman face portrait selfie smiling smile "
    "looking camera shot close up medium wide cinematic dramatic dreamy premium soft hard light lighting "
    "golden hour neon night day sunset beach city street studio rain snow forest dolly orbit drone "
    "handheld static push pull pan tilt roll fpv arc slow fast motion lens mm film grain colour color "
    "warm cool moody bright dark blurry low quality distorted deformed watermark text"
)
VOCABULARY = tuple(_WORDS.split())


def build_tokenizer() -> PreTrainedTokenizerFast:
    words = ["<pad>", "</s>", "<unk>", *dict.fromkeys(VOCABULARY)]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def wan22_tiny_configs(vocab_size: int) -> dict[str, dict[str, Any]]:
    """Configs of a tiny Wan 2.2 TI2V-5B-shaped checkpoint (VAE z_dim=48, expand_timesteps): the
    `transformer` (WanTransformer3DModel), `vae` (AutoencoderKLWan) and `text_encoder` (UMT5Config) that
    the loading tests and bench/gpu_real.py --tiny save and load like a real one."""
    return {
        "transformer": dict(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=48,
            out_channels=48,
            text_dim=TEXT_DIM,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        ),
        "vae": dict(
            base_dim=3,
            z_dim=48,
            in_channels=12,
            out_channels=12,
            is_residual=True,
            patch_size=2,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
            temperal_downsample=[False, True, True],
        ),
        "text_encoder": dict(
            vocab_size=vocab_size,
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        ),
    }


def build_transformer(in_channels: int, seed: int = WEIGHTS_SEED) -> WanTransformer3DModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=in_channels,
            out_channels=16,
            text_dim=TEXT_DIM,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        ).eval()


def build_pipelines(seed: int = WEIGHTS_SEED) -> tuple[WanPipeline, WanImageToVideoPipeline]:
    """The text-to-video and image-to-video pipelines, sharing tokenizer, text encoder and VAE."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=TEXT_DIM,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        ).eval()
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        ).eval()
    shared = {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae}
    t2v = WanPipeline(
        **shared,
        transformer=build_transformer(16, seed),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    i2v = WanImageToVideoPipeline(
        **shared,
        transformer=build_transformer(36, seed + 1),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_encoder=None,
        image_processor=None,
    )
    for pipe in (t2v, i2v):
        pipe.set_progress_bar_config(disable=True)
    return t2v, i2v


def check_inputs(job: GenerationJob) -> None:
    check_route_inputs(job)


def build_call_kwargs(job: GenerationJob, *, image: Any, generator: Any, callback: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "height": job.height,
        "width": job.width,
        "num_frames": job.num_frames,
        "num_inference_steps": job.route.steps,
        "guidance_scale": job.route.guidance,
        "generator": generator,
        "output_type": "latent",
        "callback_on_step_end": callback,
        "callback_on_step_end_tensor_inputs": ["latents"],
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    if image is not None:
        kwargs["image"] = image
    return kwargs


@torch.no_grad()
def decode_wan_latents(pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """The decode of WanPipeline.__call__ (copied), run apart so the runner can time it: uint8 frames
    (F, H, W, 3), the bytes diffusers' float frames in [0, 1] would round to (`video_to_uint8`)."""
    from diffusers.utils.torch_utils import get_module_execution_device

    from gpu_worker.speedups import vae_decode_dtype

    vae = pipe.vae
    # the decoder's dtype: a speed profile may run it in bfloat16 while the encoder stays as loaded
    latents = latents.to(device=get_module_execution_device(vae), dtype=vae_decode_dtype(vae))
    shape = (1, vae.config.z_dim, 1, 1, 1)
    latents_mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
    latents_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
    latents = latents / latents_std + latents_mean
    video = vae.decode(latents, return_dict=False)[0]
    return video_to_uint8(video[0])


def video_to_uint8(video: torch.Tensor) -> np.ndarray:
    """A decoded clip (C, F, H, W) in [-1, 1] as uint8 frames (F, H, W, C), converted where it lies (the
    GPU) before the copy to the host: a quarter of the bytes to copy, and no float copy of the whole clip
    on the CPU. The same float32 arithmetic as diffusers' `postprocess_video(output_type="np")` followed
    by `video.frames_to_uint8` (`(x * 0.5 + 0.5).clamp(0, 1)`, then `x * 255 + 0.5` truncated), so the
    same bytes."""
    frames = (video.permute(1, 2, 3, 0).float() * 0.5 + 0.5).clamp(0, 1)
    return (frames * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


class WanModels:
    """What the Wan families (tiny-wan and Wan 2.2) share once their text-to-video and image-to-video
    pipelines (`t2v`, `i2v`) are built: the pipeline per job, its arguments, denoising with the tier's
    refine pass, and decoding."""

    t2v: Any
    i2v: Any

    def pipeline_for(self, job: GenerationJob) -> WanPipeline | WanImageToVideoPipeline:
        return self.i2v if job.image_key is not None else self.t2v

    def call_kwargs(self, job: GenerationJob, *, image: Any, generator: Any, callback: Any) -> dict[str, Any]:
        return build_call_kwargs(job, image=image, generator=generator, callback=callback)

    def denoise_steps(self, job: GenerationJob) -> int:
        return job.route.steps + job.route.refine_steps

    def denoise(
        self, pipe: Any, job: GenerationJob, *, image: Any, generator: Any, callback: Any, timings: dict
    ) -> torch.Tensor:
        kwargs = self.call_kwargs(job, image=image, generator=generator, callback=callback)
        return denoise_and_refine(pipe, kwargs, job.route, generator=generator, timings=timings)

    def decode(
        self, pipe: Any, latents: torch.Tensor, generator: Any, *, size: tuple[int, int] | None = None
    ) -> np.ndarray:
        return decode_wan_latents(pipe, latents)  # denoised at the job's size, which is `size`


class TinyWanModel(WanModels):
    def __init__(self, route: RouteSpec, *, device: str = "cpu") -> None:
        self.route = route
        self.device = device
        self.t2v, self.i2v = build_pipelines()
        self.t2v.to(device)
        self.i2v.to(device)


def load(route: RouteSpec, *, model_root: Path | None = None, device: str = "cpu") -> TinyWanModel:
    # Built from configs: no checkpoint folder. It runs where it is asked to (CPU in tests and embedded).
    return TinyWanModel(route, device=device)
