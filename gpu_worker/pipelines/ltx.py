"""ltx: LTX-Video (0.9.x) through `LTXConditionPipeline`, from a local diffusers folder under MODEL_ROOT.

Text-to-video runs without conditions; image-to-video puts the selfie at frame 0 as an
`LTXVideoCondition`. Sizes are multiples of 32 and frame counts 8k+1 (the VAE compresses 32x32x8).
The 2B 0.9.x models are OpenRail-M; the 13B ones carry a revenue-capped licence (reference/gpu.md §0).
The folder is e.g. `huggingface-cli download Lightricks/LTX-Video-0.9.7-distilled --local-dir
$MODEL_ROOT/<route.checkpoint>`; distilled checkpoints want `guidance` 1.0 and few steps on the route.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_worker.contract import GenerationJob, RouteSpec
from gpu_worker.pipelines import check_route_inputs, checkpoint_folder, require_device

MAX_SEQUENCE_LENGTH = 256
# Decode settings of the 0.9.5+ VAEs with timestep conditioning (diffusers ltx_video.md examples).
DECODE_TIMESTEP = 0.05
DECODE_NOISE_SCALE = 0.025


def check_inputs(job: GenerationJob) -> None:
    check_route_inputs(job)


def build_call_kwargs(job: GenerationJob, *, image: Any, generator: Any, callback: Any) -> dict[str, Any]:
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    kwargs: dict[str, Any] = {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "height": job.height,
        "width": job.width,
        "num_frames": job.num_frames,
        "frame_rate": job.fps,
        "num_inference_steps": job.route.steps,
        "guidance_scale": job.route.guidance,
        "generator": generator,
        "output_type": "latent",
        "callback_on_step_end": callback,
        "callback_on_step_end_tensor_inputs": ["latents"],
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    if image is not None:
        kwargs["conditions"] = [LTXVideoCondition(image=image, frame_index=0, strength=1.0)]
    return kwargs


@torch.no_grad()
def decode_ltx_latents(pipe: Any, latents: torch.Tensor, generator: Any) -> np.ndarray:
    """The decode of LTXConditionPipeline.__call__ (copied), run apart so the runner can time it."""
    from diffusers.utils.torch_utils import get_module_execution_device

    vae = pipe.vae
    latents = latents.to(device=get_module_execution_device(vae))
    latents = pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    latents = latents.to(dtype=vae.dtype)
    timestep = None
    if vae.config.timestep_conditioning:
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        timestep = torch.tensor([DECODE_TIMESTEP], device=latents.device, dtype=latents.dtype)
        scale = torch.tensor([DECODE_NOISE_SCALE], device=latents.device, dtype=latents.dtype)[
            :, None, None, None, None
        ]
        latents = (1 - scale) * latents + scale * noise
    video = vae.decode(latents, timestep, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")[0]


class LTXModel:
    def __init__(self, route: RouteSpec, pipe: Any) -> None:
        self.route = route
        self.pipe = pipe

    def pipeline_for(self, job: GenerationJob) -> Any:
        return self.pipe  # one pipeline: conditions carry the image

    def call_kwargs(self, job: GenerationJob, *, image: Any, generator: Any, callback: Any) -> dict[str, Any]:
        return build_call_kwargs(job, image=image, generator=generator, callback=callback)

    def decode(self, pipe: Any, latents: torch.Tensor, generator: Any) -> np.ndarray:
        return decode_ltx_latents(pipe, latents, generator)


def load(
    route: RouteSpec,
    *,
    model_root: Path,
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    offload: bool | None = None,
) -> LTXModel:
    from diffusers import LTXConditionPipeline

    # 1. Check the folder and the device before touching gigabytes
    folder = checkpoint_folder(route, model_root)
    require_device(device)
    offload = os.environ.get("GPU_CPU_OFFLOAD", "") == "1" if offload is None else offload

    # 2. Load from local files only (workers have no network)
    pipe = LTXConditionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    # 3. Place on the device
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return LTXModel(route, pipe)
