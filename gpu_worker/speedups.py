"""Speed-ups of a diffusers video pipeline, as one validated settings object: a route's speed profile.

A `SpeedProfile` names what to turn on; `apply_speedups(pipe, profile)` turns it on through diffusers'
public hooks (0.42) and returns what it applied, so the job's timings can say which speed-ups produced
them; `reset_speedups(pipe)` takes the caches (and, if asked, the compilation) off again.

- `attention_backend`: `transformer.set_attention_backend(name)`. Only backends that need no download at
  run time are accepted (workers have no network; the `*_hub` kernels fetch code). None is diffusers'
  default (DIFFUSERS_ATTN_BACKEND, else "native": torch's scaled_dot_product_attention, which picks its
  own kernel), set explicitly: `set_attention_backend` also makes its backend the process-wide default
  of diffusers' attention dispatch, so a profile's backend would otherwise outlive the profile.
- `compile_blocks`: regional compilation of the blocks `transformer._repeated_blocks` names (each
  WanTransformerBlock; the 30 blocks share one compiled graph), `fullgraph=True`. What
  `transformer.compile_repeated_blocks(fullgraph=True)` compiles, one level lower: each block's own
  `forward` is compiled (`block.forward = torch.compile(block.forward)`), not its `__call__`
  (`nn.Module.compile`). The cache hooks below wrap `forward` with host-side decisions (a `.item()` on a
  residual, step counters in Python objects); under `compile_repeated_blocks` dynamo would trace them,
  which breaks `fullgraph=True` and recompiles as the counters change. Compiled beneath the hooks, the
  blocks compile once per shape and every cache (or none) runs on the same compiled code. `dynamic=False`:
  a worker renders a few preset shapes (warmed up one by one, gpu_worker/runner.py `warm_up`), and each
  gets its own static graph. Without it, dynamo's automatic dynamic shapes would compile the second shape
  as a dynamic-shape graph, which it then checks first, so every job, the first shape's too, would run
  the dynamic kernels. (A shape outside the presets compiles its own graph in its first job.)
- `cache`: a step cache, `transformer.enable_cache(config)`: `first_block` (FirstBlockCacheConfig: skip
  the remaining blocks when the first block's residual changed by less than `threshold`), `mag`
  (MagCacheConfig: skip by accumulated magnitude-ratio error; needs the checkpoint's `mag_ratios` or
  `calibrate=True`, and the number of steps), `taylorseer` (TaylorSeerCacheConfig: compute every
  `cache_interval` steps, predict in between by a Taylor expansion; `lite`, the default, predicts only the
  output projection and skips the blocks; otherwise each block's output is predicted, which keeps a copy
  of the hidden states per block and Taylor order). The Wan pipelines call the transformer under
  `cache_context("cond")` and `cache_context("uncond")`, so the conditional and unconditional passes keep
  separate cache states; `pipe.maybe_free_model_hooks()` (the runner calls it after every run, a cancel
  included) resets them between jobs.
- `vae_tiling`: `vae.enable_tiling()` (decodes in overlapping spatial tiles: less memory, a little slower).
- `tf32`: `torch.backends.cuda.matmul.allow_tf32` (process-wide: float32 matmuls, i.e. the VAE, on tensor
  cores); off is PyTorch's default. (cuDNN convolutions, most of the VAE, use TF32 by default anyway:
  `torch.backends.cudnn.allow_tf32`.)
- `vae_decode_dtype`: the precision of the VAE's decoding modules (`post_quant_conv` and `decoder`; the
  encoder, which encodes the selfie, stays as loaded): "bfloat16" halves the decode's memory traffic and
  runs its convolutions on bf16 tensor cores. None runs them as the route loads them (float32 for Wan
  2.2, as diffusers' wan.md advises). The weights as loaded are kept on the CPU while cast, so going
  back (None, or a profile without it) restores them exactly, not a bf16-rounded copy. The decode casts
  the latents to the decoder's dtype (`vae_decode_dtype(vae)`); the Wan VAE's RMS norms normalise in
  float32 either way.
- `cudnn_benchmark`: `torch.backends.cudnn.benchmark` (process-wide): cuDNN times its convolution
  algorithms for each new input shape and keeps the fastest, instead of its heuristic's choice. The Wan
  VAE decodes latent frame by latent frame, so each shape repeats ~30 times a clip; the first decode of
  a shape pays the search (a compiled route's warm-up decodes a few latent frames per shape for that).

`SpeedProfile` and its constants live in gpu_worker/contract.py (a route carries a profile, so the backend
validates it with the same code) and are re-exported here. Standard library and torch only at import;
diffusers is imported when a cache is applied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

# The profile itself is part of the job contract (a route carries one): stdlib only, shared with the backend.
from gpu_worker.contract import (
    ATTENTION_BACKENDS,
    CACHE_FIRST_BLOCK,
    CACHE_MAG,
    CACHE_PARAMS,
    CACHE_TAYLORSEER,
    CACHES,
    VAE_DECODE_DTYPES,
    SpeedProfile,
)

# The modules TaylorSeer predicts when not in lite mode: each transformer block (re.fullmatch on names).
TAYLORSEER_BLOCK_PATTERNS: tuple[str, ...] = (r"(transformer_)?blocks\.\d+",)
_COMPILED_MARK = "_speedups_compiled"  # set on the transformer: the compile options it was compiled with
# Set on a VAE whose decoding modules were cast: (their dtype and state dicts as loaded, on the CPU)
_DECODE_STASH = "_speedups_decode_as_loaded"


def cache_config(profile: SpeedProfile, *, num_inference_steps: int | None = None) -> Any:
    """The diffusers config object of the profile's cache (None without a cache)."""
    params = dict(profile.cache_params)
    if profile.cache is None:
        return None
    if profile.cache == CACHE_FIRST_BLOCK:
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=params["threshold"])
    if profile.cache == CACHE_MAG:
        from diffusers.hooks import MagCacheConfig

        if num_inference_steps is None:
            raise ValueError("cache 'mag' needs the number of inference steps of the run")
        ratios = params["mag_ratios"]
        return MagCacheConfig(
            threshold=params["threshold"],
            max_skip_steps=params["max_skip_steps"],
            retention_ratio=params["retention_ratio"],
            num_inference_steps=num_inference_steps,
            mag_ratios=None if ratios is None else list(ratios),
            calibrate=params["calibrate"],
        )
    from diffusers.hooks import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(
        cache_interval=params["cache_interval"],
        disable_cache_before_step=params["disable_cache_before_step"],
        disable_cache_after_step=params["disable_cache_after_step"],
        max_order=params["max_order"],
        use_lite_mode=params["lite"],
        # Not lite: predict every block's output. diffusers' default patterns ("^blocks.*attn") match no
        # module of a Wan transformer (its attention modules are blocks.N.attn1/attn2), which would make
        # the cache a silent no-op.
        cache_identifiers=None if params["lite"] else list(TAYLORSEER_BLOCK_PATTERNS),
    )


def apply_speedups(
    pipe: Any,
    profile: SpeedProfile,
    *,
    num_inference_steps: int | None = None,
    compile_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Puts `pipe` (its transformer, VAE and the process's matmul settings) in the state `profile` says
    and returns what is now applied (JSON-ready, for the job's timings).

    Idempotent: a cache already on is replaced, attention and tiling are set either way, and the blocks
    are compiled once (again only if the compile options change). A profile without compile leaves
    blocks compiled earlier as they are (`reset_speedups(pipe, uncompile=True)` drops them).
    `compile_options` go to `torch.compile` (e.g. `{"backend": "eager"}` in tests).
    """
    transformer = pipe.transformer
    applied: dict[str, Any] = {}

    # 1. Matmul precision and cuDNN's algorithm search (process-wide)
    torch.backends.cuda.matmul.allow_tf32 = profile.tf32
    applied["tf32"] = profile.tf32
    torch.backends.cudnn.benchmark = profile.cudnn_benchmark
    applied["cudnn_benchmark"] = profile.cudnn_benchmark

    # 2. Attention backend (None: diffusers' default, set again in case an earlier profile changed it)
    backend = profile.attention_backend or default_attention_backend()
    transformer.set_attention_backend(backend)
    applied["attention_backend"] = backend

    # 3. Regional compilation of the repeated blocks, beneath any cache hooks (so those go first)
    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    if profile.compile_blocks:
        options = {"fullgraph": True, "dynamic": False, **(compile_options or {})}
        if getattr(transformer, _COMPILED_MARK, None) != options:
            _uncompile_blocks(transformer)
            for block in repeated_blocks(transformer):
                block.forward = torch.compile(block.forward, **options)
            setattr(transformer, _COMPILED_MARK, dict(options))
    applied["compile_blocks"] = getattr(transformer, _COMPILED_MARK, None) is not None

    # 4. Step cache: its hooks wrap the (compiled) block forwards
    config = cache_config(profile, num_inference_steps=num_inference_steps)
    if config is not None:
        transformer.enable_cache(config)
    applied["cache"] = profile.cache
    applied["cache_params"] = profile.to_dict()["cache_params"]

    # 5. VAE tiling
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        if profile.vae_tiling:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        applied["vae_tiling"] = bool(getattr(vae, "use_tiling", profile.vae_tiling))
    else:
        applied["vae_tiling"] = False

    # 6. The VAE decoder's precision (what it runs in now: the route's own when the profile says none)
    if vae is not None and vae_decode_modules(vae):
        applied["vae_decode_dtype"] = set_vae_decode_dtype(vae, profile.vae_decode_dtype)
    else:
        applied["vae_decode_dtype"] = None
    return applied


def reset_speedups(pipe: Any, *, uncompile: bool = False) -> None:
    """Takes the cache off, puts the attention backend and the VAE (tiling, the decoder's weights as loaded)
    back to diffusers' defaults, and with `uncompile=True` drops the compiled blocks (they run eagerly
    again; a LoRA added afterwards then costs no recompilation). TF32 and cuDNN's benchmark mode are
    process-wide and left as they are."""
    transformer = pipe.transformer
    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    if hasattr(transformer, "set_attention_backend"):
        transformer.set_attention_backend(default_attention_backend())
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "disable_tiling"):
        vae.disable_tiling()
    if vae is not None and vae_decode_modules(vae):
        set_vae_decode_dtype(vae, None)
    if uncompile:
        _uncompile_blocks(transformer)


def vae_decode_modules(vae: Any) -> list[torch.nn.Module]:
    """The modules a VAE decodes with (`post_quant_conv` when it has one, then `decoder`)."""
    modules = (getattr(vae, "post_quant_conv", None), getattr(vae, "decoder", None))
    return [module for module in modules if isinstance(module, torch.nn.Module)]


def vae_decode_dtype(vae: Any) -> torch.dtype:
    """The dtype a VAE decodes in (its decoder's parameters'): what latents are cast to before decoding."""
    for module in vae_decode_modules(vae):
        for parameter in module.parameters():
            return parameter.dtype
    return vae.dtype


def set_vae_decode_dtype(vae: Any, name: str | None) -> str:
    """Casts the VAE's decoding modules to `name` (one of VAE_DECODE_DTYPES), or with None puts back their
    weights as loaded; returns the dtype they now run in ("float32", "bfloat16", ...)."""
    if name is not None and name not in VAE_DECODE_DTYPES:
        raise ValueError(f"vae_decode_dtype must be null or one of {', '.join(VAE_DECODE_DTYPES)}")
    modules = vae_decode_modules(vae)
    if not modules:
        raise ValueError(f"{type(vae).__name__} has no decoder to cast")
    current = vae_decode_dtype(vae)
    stash = vae.__dict__.get(_DECODE_STASH)
    loaded = stash[0] if stash is not None else current
    target = loaded if name is None else getattr(torch, name)
    if target != current:
        if stash is not None:  # back to the weights as loaded first: never a cast of a cast
            _restore_decode(vae, modules, stash)
        if target != loaded:
            stash = (loaded, [_cpu_state(module) for module in modules])
            for module in modules:
                module.to(dtype=target)
            vae.__dict__[_DECODE_STASH] = stash
    return str(vae_decode_dtype(vae)).removeprefix("torch.")


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}


def _restore_decode(vae: Any, modules: list[torch.nn.Module], stash: tuple[torch.dtype, list[dict]]) -> None:
    loaded, states = stash
    for module, state in zip(modules, states, strict=True):
        module.to(dtype=loaded)
        module.load_state_dict(state)
    del vae.__dict__[_DECODE_STASH]


def default_attention_backend() -> str:
    """diffusers' default backend: DIFFUSERS_ATTN_BACKEND, else torch's scaled_dot_product_attention."""
    return os.environ.get("DIFFUSERS_ATTN_BACKEND", "native").lower()


def repeated_blocks(transformer: Any) -> list[torch.nn.Module]:
    """The modules `compile_repeated_blocks` compiles: those of the classes `_repeated_blocks` names."""
    names = getattr(transformer, "_repeated_blocks", None) or ()
    blocks = [module for module in transformer.modules() if type(module).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} names no repeated blocks to compile")
    return blocks


def _uncompile_blocks(transformer: Any) -> None:
    """Back to the eager block forwards (call with no cache hooks on the blocks)."""
    if getattr(transformer, _COMPILED_MARK, None) is None:
        return
    for block in repeated_blocks(transformer):
        block.__dict__.pop("forward", None)  # the instance attribute set above; the class's forward again
    delattr(transformer, _COMPILED_MARK)


__all__ = [
    "ATTENTION_BACKENDS",
    "CACHE_FIRST_BLOCK",
    "CACHE_MAG",
    "CACHE_TAYLORSEER",
    "CACHES",
    "CACHE_PARAMS",
    "VAE_DECODE_DTYPES",
    "SpeedProfile",
    "apply_speedups",
    "cache_config",
    "repeated_blocks",
    "default_attention_backend",
    "reset_speedups",
    "set_vae_decode_dtype",
    "vae_decode_dtype",
    "vae_decode_modules",
]
