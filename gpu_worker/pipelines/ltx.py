"""ltx: LTX-Video (0.9.x) through `LTXConditionPipeline`, from a local diffusers folder under MODEL_ROOT.

Text-to-video runs without conditions; image-to-video puts the selfie at frame 0 as an
`LTXVideoCondition`. Sizes are multiples of 32 and frame counts 8k+1 (the VAE compresses 32x32x8).
The 2B 0.9.x models are OpenRail-M; the 13B ones carry a revenue-capped licence (reference/gpu.md §0),
and `Lightricks/LTX-Video-0.9.7-distilled` (the shipped route's folder) is the 13B distilled one.
The folder is e.g. `huggingface-cli download Lightricks/LTX-Video-0.9.7-distilled --local-dir
$MODEL_ROOT/LTX-Video-0.9.7-distilled`.

The checkpoint's recipe (diffusers' ltx_video.md) follows the folder's name, the Hugging Face repository's:
a 0.9.7 or 0.9.8 `distilled` folder runs DISTILLED (guidance- and timestep-distilled: its 8 given
timesteps, guidance 1.0 with rescale 0.7, no noise on the first-frame condition, decode at timestep
0.05 with noise 0.025), so its route must say 8 steps and guidance 1.0 (`check_inputs` refuses
others); any other folder runs BASE (the route's steps and guidance on the pipeline's own schedule).
The two-stage flow of those docs (low resolution, latent upsampler, refine) is not run here: one
stage at the job's size.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_worker.contract import GenerationJob, RouteSpec
from gpu_worker.pipelines import check_route_inputs, checkpoint_folder, require_device

MAX_SEQUENCE_LENGTH = 256


@dataclass(frozen=True)
class LtxRecipe:
    """How a checkpoint is called: the arguments of `LTXConditionPipeline.__call__` it fixes."""

    name: str
    timesteps: tuple[float, ...] | None  # None: the pipeline's schedule for the route's steps
    guidance_scale: float | None  # None: the route's guidance
    guidance_rescale: float
    image_cond_noise_scale: float  # noise added to the first-frame condition's latents
    decode_timestep: float  # the VAE decode of 0.9.1+ checkpoints (timestep conditioning)
    decode_noise_scale: float


BASE = LtxRecipe(
    name="base",
    timesteps=None,
    guidance_scale=None,
    guidance_rescale=0.0,  # the pipeline's defaults
    image_cond_noise_scale=0.15,
    decode_timestep=0.05,
    decode_noise_scale=0.025,
)
DISTILLED = LtxRecipe(
    name="0.9.7/0.9.8 distilled",
    timesteps=(1000, 993, 987, 981, 975, 909, 725, 0.03),
    guidance_scale=1.0,
    guidance_rescale=0.7,
    image_cond_noise_scale=0.0,
    decode_timestep=0.05,
    decode_noise_scale=0.025,
)
DISTILLED_CHECKPOINT = re.compile(r"0\.9\.[78].*distilled", re.IGNORECASE)


def recipe_for(route: RouteSpec) -> LtxRecipe:
    return DISTILLED if DISTILLED_CHECKPOINT.search(route.checkpoint) else BASE


def check_inputs(job: GenerationJob) -> None:
    check_route_inputs(job)
    route, recipe = job.route, recipe_for(job.route)
    runs = f"{route.name} runs the {recipe.name} recipe"
    if recipe.timesteps is not None and route.steps != len(recipe.timesteps):
        raise ValueError(f"{runs}: {len(recipe.timesteps)} steps, not {route.steps}")
    if recipe.guidance_scale is not None and route.guidance != recipe.guidance_scale:
        raise ValueError(f"{runs}: guidance {recipe.guidance_scale}, not {route.guidance}")


def build_call_kwargs(job: GenerationJob, *, image: Any, generator: Any, callback: Any) -> dict[str, Any]:
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    recipe = recipe_for(job.route)
    kwargs: dict[str, Any] = {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "height": job.height,
        "width": job.width,
        "num_frames": job.num_frames,
        "frame_rate": job.fps,
        "num_inference_steps": job.route.steps,
        "guidance_scale": job.route.guidance if recipe.guidance_scale is None else recipe.guidance_scale,
        "guidance_rescale": recipe.guidance_rescale,
        "image_cond_noise_scale": recipe.image_cond_noise_scale,
        "decode_timestep": recipe.decode_timestep,  # as the recipe says; decoded by `decode_ltx_latents`
        "decode_noise_scale": recipe.decode_noise_scale,
        "generator": generator,
        "output_type": "latent",
        "callback_on_step_end": callback,
        "callback_on_step_end_tensor_inputs": ["latents"],
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    if recipe.timesteps is not None:
        kwargs["timesteps"] = list(recipe.timesteps)
    if image is not None:
        kwargs["conditions"] = [LTXVideoCondition(image=image, frame_index=0, strength=1.0)]
    return kwargs


@torch.no_grad()
def decode_ltx_latents(
    pipe: Any, latents: torch.Tensor, generator: Any, recipe: LtxRecipe = BASE
) -> np.ndarray:
    """The decode of LTXConditionPipeline.__call__ (copied), run apart so the runner can time it."""
    from diffusers.utils.torch_utils import get_module_execution_device

    from gpu_worker.speedups import vae_decode_dtype

    vae = pipe.vae
    latents = latents.to(device=get_module_execution_device(vae))
    latents = pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    latents = latents.to(dtype=vae_decode_dtype(vae))  # a speed profile may cast the decoder
    timestep = None
    if vae.config.timestep_conditioning:
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        timestep = torch.tensor([recipe.decode_timestep], device=latents.device, dtype=latents.dtype)
        scale = torch.tensor([recipe.decode_noise_scale], device=latents.device, dtype=latents.dtype)[
            :, None, None, None, None
        ]
        latents = (1 - scale) * latents + scale * noise
    video = vae.decode(latents, timestep, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")[0]


class LTXModel:
    def __init__(self, route: RouteSpec, pipe: Any) -> None:
        self.route = route
        self.pipe = pipe
        self.recipe = recipe_for(route)

    def pipeline_for(self, job: GenerationJob) -> Any:
        return self.pipe  # one pipeline: conditions carry the image

    def call_kwargs(self, job: GenerationJob, *, image: Any, generator: Any, callback: Any) -> dict[str, Any]:
        return build_call_kwargs(job, image=image, generator=generator, callback=callback)

    def decode(self, pipe: Any, latents: torch.Tensor, generator: Any) -> np.ndarray:
        return decode_ltx_latents(pipe, latents, generator, self.recipe)


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
