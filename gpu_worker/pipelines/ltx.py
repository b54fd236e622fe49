"""ltx: LTX-Video (0.9.x) through `LTXConditionPipeline`, from a local diffusers folder under MODEL_ROOT.

Text-to-video runs without conditions; image-to-video puts the selfie at frame 0 as an
`LTXVideoCondition`. Sizes are multiples of 32 and frame counts 8k+1 (the VAE compresses 32x32x8).
The 2B 0.9.x models are OpenRail-M; the 13B ones carry a revenue-capped licence (reference/gpu.md §0),
and `Lightricks/LTX-Video-0.9.7-distilled` (the shipped route's folder) is the 13B distilled one.
The folder is e.g. `huggingface-cli download Lightricks/LTX-Video-0.9.7-distilled --local-dir
$MODEL_ROOT/LTX-Video-0.9.7-distilled`.

The checkpoint's recipe (diffusers' ltx_video.md) follows the folder's name, the Hugging Face repository's:
a 0.9.7 or 0.9.8 `distilled` folder runs DISTILLED or DISTILLED_098 (guidance- and timestep-distilled: its
8 given timesteps, guidance 1.0 with rescale 0.7, no noise on the first-frame condition, decode at
timestep 0.05 with noise 0.025), so its route must say 8 steps and guidance 1.0 (`check_inputs` refuses
others); any other folder runs BASE (the route's steps and guidance on the pipeline's own schedule).

Two stages when a distilled folder also holds the spatial latent upsampler in `latent_upsampler/` (an
`LTXLatentUpsamplerModel`, e.g. `huggingface-cli download Lightricks/ltxv-spatial-upscaler-0.9.7
--include "latent_upsampler/*" --local-dir $MODEL_ROOT/LTX-Video-0.9.7-distilled`), as ltx_video.md runs
those checkpoints:

1. the recipe's 8 timesteps at 2/3 of the job's size, rounded down to the VAE's multiple (the family's 32),
   latents out;
2. the latents upsampled x2 by `LTXLatentUpsamplePipeline`, AdaIN-matched to the low-resolution latents
   (factor 1.0) and, for 0.9.8, tone-mapped (compression 0.6);
3. a refine pass at the upsampled size on the refine timesteps (1000, 909, 725, 421, 0) at denoise
   strength 0.999, which the pipeline turns into their last 4 steps on the upsampled latents re-noised
   to 0.909, with the first-frame condition again;
4. the decode (`decode_ltx_latents`), resized to the job's size (bicubic, antialiased, as ltx_video.md's
   PIL resize) on the device.

Without that folder, one stage at the job's size (a BASE folder ignores an upsampler, with a warning:
the undistilled two-stage recipes, e.g. 0.9.7-dev's, are not implemented here). The job's timings say
which ran (`ltx_flow`: "two-stage" or "one-stage") and, two-stage, the seconds of each part of
`denoise`: `denoise_low_res`, `upsample`, `denoise_refine`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_worker.contract import GenerationJob, RouteSpec
from gpu_worker.pipelines import check_route_inputs, checkpoint_folder, require_device

logger = logging.getLogger(__name__)

MAX_SEQUENCE_LENGTH = 256
UPSAMPLER_FOLDER = "latent_upsampler"  # in the route's checkpoint folder: its presence makes two stages
LOW_RES_FACTOR = 2 / 3  # the first stage's size, as a fraction of the job's (ltx_video.md's downscale_factor)
ONE_STAGE, TWO_STAGE = "one-stage", "two-stage"  # the job's timings["ltx_flow"]


@dataclass(frozen=True)
class LtxRecipe:
    """How a checkpoint is called: the arguments of `LTXConditionPipeline.__call__` it fixes, and those of
    the two-stage flow's upsampling and refine pass (None: the checkpoint runs one stage only)."""

    name: str
    timesteps: tuple[float, ...] | None  # None: the pipeline's schedule for the route's steps
    guidance_scale: float | None  # None: the route's guidance
    guidance_rescale: float
    image_cond_noise_scale: float  # noise added to the first-frame condition's latents
    decode_timestep: float  # the VAE decode of 0.9.1+ checkpoints (timestep conditioning)
    decode_noise_scale: float
    refine_timesteps: tuple[float, ...] | None = None
    refine_denoise_strength: float = 1.0  # the refine pass keeps the last int(n * strength) timesteps
    adain_factor: float = 0.0  # LTXLatentUpsamplePipeline: match the upsampled latents' statistics
    tone_map_compression_ratio: float = 0.0


BASE = LtxRecipe(
    name="base",
    timesteps=None,
    guidance_scale=None,
    guidance_rescale=0.0,  # the pipeline's defaults
    image_cond_noise_scale=0.15,
    decode_timestep=0.05,
    decode_noise_scale=0.025,
)
# diffusers' ltx_video.md, "LTX-Video 0.9.7 distilled": both calls of LTXConditionPipeline and the upsampling
DISTILLED = LtxRecipe(
    name="0.9.7 distilled",
    timesteps=(1000, 993, 987, 981, 975, 909, 725, 0.03),
    guidance_scale=1.0,
    guidance_rescale=0.7,
    image_cond_noise_scale=0.0,
    decode_timestep=0.05,
    decode_noise_scale=0.025,
    refine_timesteps=(1000, 909, 725, 421, 0),
    refine_denoise_strength=0.999,  # "Effectively, 4 inference steps out of 5"
    adain_factor=1.0,
)
# "LTX-Video 0.9.8 distilled": as 0.9.7, and the upsampled latents tone-mapped ("0.6 is recommended")
DISTILLED_098 = dataclasses.replace(DISTILLED, name="0.9.8 distilled", tone_map_compression_ratio=0.6)
DISTILLED_CHECKPOINT = re.compile(r"0\.9\.([78]).*distilled", re.IGNORECASE)


def recipe_for(route: RouteSpec) -> LtxRecipe:
    match = DISTILLED_CHECKPOINT.search(route.checkpoint)
    if match is None:
        return BASE
    return DISTILLED_098 if match.group(1) == "8" else DISTILLED


def refine_steps(recipe: LtxRecipe) -> int:
    """The refine pass's denoising steps: what `LTXConditionPipeline.get_timesteps` keeps (copied)."""
    count = len(recipe.refine_timesteps or ())
    return min(int(count * recipe.refine_denoise_strength), count)


def low_res_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """The first stage's (width, height): LOW_RES_FACTOR of the job's, rounded down to `multiple`
    (ltx_video.md's `round_to_nearest_resolution_acceptable_by_vae`: the VAE's 32, which the pipeline
    requires), at least one multiple."""
    return tuple(max(multiple, int(side * LOW_RES_FACTOR) // multiple * multiple) for side in (width, height))


def check_inputs(job: GenerationJob) -> None:
    check_route_inputs(job)
    route, recipe = job.route, recipe_for(job.route)
    runs = f"{route.name} runs the {recipe.name} recipe"
    if recipe.timesteps is not None and route.steps != len(recipe.timesteps):
        raise ValueError(f"{runs}: {len(recipe.timesteps)} steps, not {route.steps}")
    if recipe.guidance_scale is not None and route.guidance != recipe.guidance_scale:
        raise ValueError(f"{runs}: guidance {recipe.guidance_scale}, not {route.guidance}")


def build_call_kwargs(
    job: GenerationJob,
    *,
    image: Any,
    generator: Any,
    callback: Any,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One call of the pipeline at the job's size, or at `size` (width, height): the first stage's."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    recipe = recipe_for(job.route)
    width, height = size or (job.width, job.height)
    kwargs: dict[str, Any] = {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "height": height,
        "width": width,
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
        # the selfie, resized by the pipeline to this call's size (both stages condition on it)
        kwargs["conditions"] = [LTXVideoCondition(image=image, frame_index=0, strength=1.0)]
    return kwargs


def build_refine_kwargs(
    job: GenerationJob,
    latents: torch.Tensor,
    *,
    size: tuple[int, int],
    image: Any,
    generator: Any,
    callback: Any,
) -> dict[str, Any]:
    """The refine call of the two-stage flow: the upsampled `latents` at `size`, on the refine timesteps."""
    recipe = recipe_for(job.route)
    if recipe.refine_timesteps is None:
        raise ValueError(f"the {recipe.name} recipe has no refine pass")
    kwargs = build_call_kwargs(job, image=image, generator=generator, callback=callback, size=size)
    kwargs.update(
        latents=latents,
        timesteps=list(recipe.refine_timesteps),
        num_inference_steps=len(recipe.refine_timesteps),
        denoise_strength=recipe.refine_denoise_strength,
    )
    return kwargs


@torch.no_grad()
def decode_ltx_latents(
    pipe: Any,
    latents: torch.Tensor,
    generator: Any,
    recipe: LtxRecipe = BASE,
    *,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The decode of LTXConditionPipeline.__call__ (copied), run apart so the runner can time it; frames
    resized to `size` (width, height) when the latents are of another size (the two-stage flow's)."""
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
    if size is not None and (video.shape[-1], video.shape[-2]) != tuple(size):
        video = resize_video(video, size)
    return pipe.video_processor.postprocess_video(video, output_type="np")[0]


def resize_video(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A decoded (B, C, F, H, W) clip resized to `size` (width, height), frame by frame where it lies:
    bicubic with antialiasing, what ltx_video.md's `frame.resize((width, height))` does in PIL."""
    batch, channels, frames, _, _ = video.shape
    width, height = size
    flat = video.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, *video.shape[-2:]).float()
    flat = torch.nn.functional.interpolate(flat, size=(height, width), mode="bicubic", antialias=True)
    return flat.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)


@contextlib.contextmanager
def seconds_into(timings: dict[str, Any], name: str) -> Iterator[None]:
    """Adds the block's seconds to `timings[name]` (as the runner times its stages; a cancel included)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


class LTXModel:
    def __init__(self, route: RouteSpec, pipe: Any, upsample_pipe: Any = None) -> None:
        self.route = route
        self.pipe = pipe
        self.upsample_pipe = upsample_pipe  # an LTXLatentUpsamplePipeline over `pipe.vae`: two stages
        self.recipe = recipe_for(route)

    @property
    def two_stage(self) -> bool:
        return self.upsample_pipe is not None

    def pipeline_for(self, job: GenerationJob) -> Any:
        return self.pipe  # one pipeline: conditions carry the image

    def call_kwargs(
        self,
        job: GenerationJob,
        *,
        image: Any,
        generator: Any,
        callback: Any,
        size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        return build_call_kwargs(job, image=image, generator=generator, callback=callback, size=size)

    def denoise_steps(self, job: GenerationJob) -> int:
        """The step callbacks of one job: the route's steps, and the refine pass's when two-stage."""
        return job.route.steps + (refine_steps(self.recipe) if self.two_stage else 0)

    def denoise(
        self, pipe: Any, job: GenerationJob, *, image: Any, generator: Any, callback: Any, timings: dict
    ) -> torch.Tensor:
        """The job's latents: one pass at its size, or the two-stage flow (the module docstring)."""
        if not self.two_stage:
            timings["ltx_flow"] = ONE_STAGE
            return pipe(**self.call_kwargs(job, image=image, generator=generator, callback=callback)).frames
        timings["ltx_flow"] = TWO_STAGE
        recipe = self.recipe
        low_width, low_height = low_res_size(job.width, job.height, job.route.rules.size_multiple)
        width, height = 2 * low_width, 2 * low_height  # the upsampler doubles the latents' height and width

        # 1. Low resolution: the recipe's timesteps, latents out
        with seconds_into(timings, "denoise_low_res"):
            kwargs = self.call_kwargs(
                job, image=image, generator=generator, callback=callback, size=(low_width, low_height)
            )
            latents = pipe(**kwargs).frames

        # 2. Upsample the latents x2 (normalised latents in and out)
        with seconds_into(timings, "upsample"):
            latents = self.upsample_pipe(
                latents=latents,
                width=width,
                height=height,
                adain_factor=recipe.adain_factor,
                tone_map_compression_ratio=recipe.tone_map_compression_ratio,
                generator=generator,
                output_type="latent",
            ).frames

        # 3. Refine at the upsampled size: the last steps of the refine timesteps (the callback counts on)
        with seconds_into(timings, "denoise_refine"):
            kwargs = build_refine_kwargs(
                job, latents, size=(width, height), image=image, generator=generator, callback=callback
            )
            return pipe(**kwargs).frames

    def decode(
        self, pipe: Any, latents: torch.Tensor, generator: Any, *, size: tuple[int, int] | None = None
    ) -> np.ndarray:
        return decode_ltx_latents(pipe, latents, generator, self.recipe, size=size)


def load(
    route: RouteSpec,
    *,
    model_root: Path,
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    offload: bool | None = None,
) -> LTXModel:
    from diffusers import LTXConditionPipeline, LTXLatentUpsamplePipeline
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    # 1. Check the folder and the device before touching gigabytes
    folder = checkpoint_folder(route, model_root)
    require_device(device)
    offload = os.environ.get("GPU_CPU_OFFLOAD", "") == "1" if offload is None else offload
    recipe = recipe_for(route)

    # 2. Load from local files only (workers have no network)
    pipe = LTXConditionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    # 3. The latent upsampler, when the folder holds one and the recipe has a refine pass: two stages
    upsample_pipe = None
    if (folder / UPSAMPLER_FOLDER / "config.json").is_file():
        if recipe.refine_timesteps is None:
            logger.warning(
                "route %s: %s/%s is ignored, the %s recipe runs one stage",
                route.name,
                route.checkpoint,
                UPSAMPLER_FOLDER,
                recipe.name,
            )
        else:
            upsampler = LTXLatentUpsamplerModel.from_pretrained(
                folder, subfolder=UPSAMPLER_FOLDER, dtype=dtype, local_files_only=True
            )
            upsample_pipe = LTXLatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)
            upsample_pipe.set_progress_bar_config(disable=True)

    # 4. Place on the device (the upsampler stays there with offload too: it is small, and its pipeline's
    #    only other module is the VAE, which `pipe`'s hooks move)
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if upsample_pipe is not None:
        upsample_pipe.latent_upsampler.to(device)
    return LTXModel(route, pipe, upsample_pipe)
