"""wan22: Wan 2.2 TI2V-5B from a local diffusers folder under MODEL_ROOT, on CUDA.

One Apache-2.0 checkpoint does text-to-video and image-to-video: 1280x704 (or 704x1280), 121 frames at
24 fps. In diffusers it is a `WanPipeline` with `expand_timesteps=True` (VAE z_dim=48, 16x16x4
compression, so sizes are multiples of 32); image-to-video is a `WanImageToVideoPipeline` over the same
modules with `expand_timesteps=True` and no image encoder, where the selfie becomes the first latent
frame (reference/gpu.md §1, §3.1).

Expected folder (`huggingface-cli download Wan-AI/Wan2.2-TI2V-5B-Diffusers --local-dir
$MODEL_ROOT/<route.checkpoint>`): model_index.json, transformer/, vae/, text_encoder/, tokenizer/,
scheduler/. The VAE stays in float32 (diffusers' wan.md: better decoding quality); the transformer and
the text encoder load in bfloat16. GPU_CPU_OFFLOAD=1 turns on model CPU offload for GPUs under ~24 GB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gpu_worker.contract import GenerationJob, RouteSpec
from gpu_worker.pipelines import check_route_inputs, checkpoint_folder, require_device
from gpu_worker.pipelines.tiny_wan import WanModels

MAX_SEQUENCE_LENGTH = 512


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


class Wan22Model(WanModels):
    def __init__(self, route: RouteSpec, t2v: Any, i2v: Any) -> None:
        self.route = route
        self.t2v = t2v
        self.i2v = i2v

    def call_kwargs(self, job: GenerationJob, *, image: Any, generator: Any, callback: Any) -> dict[str, Any]:
        return build_call_kwargs(job, image=image, generator=generator, callback=callback)  # 512 tokens


def load(
    route: RouteSpec,
    *,
    model_root: Path,
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    offload: bool | None = None,
) -> Wan22Model:
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

    # 1. Check the folder and the device before touching gigabytes
    folder = checkpoint_folder(route, model_root)
    require_device(device)
    offload = os.environ.get("GPU_CPU_OFFLOAD", "") == "1" if offload is None else offload

    # 2. Load: VAE in float32, the rest in `dtype`, from local files only (workers have no network)
    vae = AutoencoderKLWan.from_pretrained(
        folder, subfolder="vae", dtype=torch.float32, local_files_only=True
    )
    t2v = WanPipeline.from_pretrained(folder, vae=vae, dtype=dtype, local_files_only=True)
    if not t2v.config.expand_timesteps or t2v.vae.config.z_dim != 48:
        raise ValueError(f"{folder} is not a Wan 2.2 TI2V-5B checkpoint (expand_timesteps, VAE z_dim=48)")

    # 3. Image-to-video over the same modules. Not `from_pipe`: it casts the shared modules to its own
    #    dtype (float32 by default), which would also change the text-to-video pipeline's transformer.
    i2v = WanImageToVideoPipeline(
        tokenizer=t2v.tokenizer,
        text_encoder=t2v.text_encoder,
        vae=t2v.vae,
        scheduler=t2v.scheduler,
        transformer=t2v.transformer,
        transformer_2=None,
        image_encoder=None,
        image_processor=None,
        boundary_ratio=None,
        expand_timesteps=True,
    )

    # 4. Place on the device (or let accelerate's hooks move each module in turn)
    for pipe in (t2v, i2v):
        pipe.set_progress_bar_config(disable=True)
        if offload:
            pipe.enable_model_cpu_offload(device=device)
    if not offload:
        t2v.to(device)  # i2v holds the same modules
    return Wan22Model(route, t2v, i2v)
