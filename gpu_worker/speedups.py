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
  blocks compile once per shape and every cache (or none) runs on the same compiled code.
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
  cores); off is PyTorch's default.

Standard library and torch only at import; diffusers is imported when a cache is applied.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

# Backends that run from what is installed (no Hub download). Those whose package is missing fail in
# `apply_speedups` with diffusers' own message; the profile itself is still valid.
ATTENTION_BACKENDS: tuple[str, ...] = (
    "native",
    "_native_cudnn",
    "_native_efficient",
    "_native_flash",
    "_native_math",
    "flex",
    "flash",
    "flash_varlen",
    "_flash_3",
    "_flash_varlen_3",
    "sage",
    "sage_varlen",
    "xformers",
)
CACHE_FIRST_BLOCK = "first_block"
CACHE_MAG = "mag"
CACHE_TAYLORSEER = "taylorseer"
CACHES: tuple[str, ...] = (CACHE_FIRST_BLOCK, CACHE_MAG, CACHE_TAYLORSEER)

# Each cache's parameters: name -> (kind, default). Kinds: "pos_float", "ratio", "pos_int", "nonneg_int",
# "opt_pos_int", "bool", "floats" (a list of positive numbers) or "order" (1..4).
CACHE_PARAMS: dict[str, dict[str, tuple[str, Any]]] = {
    CACHE_FIRST_BLOCK: {"threshold": ("pos_float", 0.05)},
    CACHE_MAG: {
        "threshold": ("pos_float", 0.06),
        "max_skip_steps": ("pos_int", 3),
        "retention_ratio": ("ratio", 0.2),
        "mag_ratios": ("floats", None),
        "calibrate": ("bool", False),
    },
    CACHE_TAYLORSEER: {
        "cache_interval": ("pos_int", 5),
        "disable_cache_before_step": ("nonneg_int", 3),
        "disable_cache_after_step": ("opt_pos_int", None),
        "max_order": ("order", 1),
        "lite": ("bool", True),
    },
}
# The modules TaylorSeer predicts when not in lite mode: each transformer block (re.fullmatch on names).
TAYLORSEER_BLOCK_PATTERNS: tuple[str, ...] = (r"(transformer_)?blocks\.\d+",)
_FIELDS = ("attention_backend", "compile_blocks", "cache", "cache_params", "vae_tiling", "tf32")
_COMPILED_MARK = "_speedups_compiled"  # set on the transformer: the compile options it was compiled with


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_param(cache: str, name: str, kind: str, value: Any) -> Any:
    where = f"cache_params.{name} of cache {cache!r}"
    if kind == "pos_float" and _is_number(value) and value > 0:
        return float(value)
    if kind == "ratio" and _is_number(value) and 0 <= value <= 1:
        return float(value)
    if kind == "pos_int" and _is_int(value) and value >= 1:
        return value
    if kind == "nonneg_int" and _is_int(value) and value >= 0:
        return value
    if kind == "opt_pos_int" and (value is None or (_is_int(value) and value >= 1)):
        return value
    if kind == "order" and _is_int(value) and 1 <= value <= 4:
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "floats" and value is None:
        return None
    if (
        kind == "floats"
        and isinstance(value, list | tuple)
        and len(value) >= 2
        and all(_is_number(v) and v > 0 for v in value)
    ):
        return tuple(float(v) for v in value)
    expected = {
        "pos_float": "a number > 0",
        "ratio": "a number in 0..1",
        "pos_int": "an integer >= 1",
        "nonneg_int": "an integer >= 0",
        "opt_pos_int": "null or an integer >= 1",
        "order": "an integer in 1..4",
        "bool": "true or false",
        "floats": "null or a list of at least 2 numbers > 0",
    }[kind]
    raise ValueError(f"{where} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class SpeedProfile:
    """What to speed up on a pipeline. The default is diffusers' default: nothing."""

    attention_backend: str | None = None
    compile_blocks: bool = False
    cache: str | None = None
    cache_params: Mapping[str, Any] = field(default_factory=dict)
    vae_tiling: bool = False
    tf32: bool = False

    def __post_init__(self) -> None:
        backend = self.attention_backend
        if backend is not None and (
            not isinstance(backend, str) or backend.lower() not in ATTENTION_BACKENDS
        ):
            raise ValueError(
                f"attention_backend must be null or one of {', '.join(ATTENTION_BACKENDS)}, got {backend!r}"
            )
        if backend is not None:
            object.__setattr__(self, "attention_backend", backend.lower())
        for name in ("compile_blocks", "vae_tiling", "tf32"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.cache is not None and self.cache not in CACHES:
            raise ValueError(f"cache must be null or one of {', '.join(CACHES)}, got {self.cache!r}")
        if not isinstance(self.cache_params, Mapping):
            raise ValueError(f"cache_params must be a mapping, got {type(self.cache_params).__name__}")
        if self.cache is None:
            if self.cache_params:
                raise ValueError("cache_params are given but no cache is chosen")
            object.__setattr__(self, "cache_params", {})
            return
        known = CACHE_PARAMS[self.cache]
        unknown = sorted(set(self.cache_params) - set(known))
        if unknown:
            raise ValueError(
                f"unknown cache_params for cache {self.cache!r}: {', '.join(map(str, unknown))}; "
                f"expected some of {', '.join(known)}"
            )
        params = {
            name: _check_param(self.cache, name, kind, self.cache_params.get(name, default))
            for name, (kind, default) in known.items()
        }
        if self.cache == CACHE_MAG and params["mag_ratios"] is None and not params["calibrate"]:
            raise ValueError("cache 'mag' needs cache_params.mag_ratios (the checkpoint's) or calibrate=true")
        object.__setattr__(self, "cache_params", params)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SpeedProfile:
        """A profile from its JSON form (a route's render profile); ValueError says what is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"a speed profile must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown speed profile fields: {', '.join(map(str, unknown))}; expected some of "
                f"{', '.join(_FIELDS)}"
            )
        return cls(**{name: data[name] for name in _FIELDS if name in data and data[name] is not None})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, complete (every cache parameter with its value), which `from_dict` reads back."""
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.cache_params.items()}
        return {
            "attention_backend": self.attention_backend,
            "compile_blocks": self.compile_blocks,
            "cache": self.cache,
            "cache_params": params,
            "vae_tiling": self.vae_tiling,
            "tf32": self.tf32,
        }

    def replace(self, **changes: Any) -> SpeedProfile:
        if "cache" in changes and "cache_params" not in changes:
            changes["cache_params"] = {}
        return dataclasses.replace(self, **changes)


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

    # 1. Matmul precision (process-wide)
    torch.backends.cuda.matmul.allow_tf32 = profile.tf32
    applied["tf32"] = profile.tf32

    # 2. Attention backend (None: diffusers' default, set again in case an earlier profile changed it)
    backend = profile.attention_backend or default_attention_backend()
    transformer.set_attention_backend(backend)
    applied["attention_backend"] = backend

    # 3. Regional compilation of the repeated blocks, beneath any cache hooks (so those go first)
    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    if profile.compile_blocks:
        options = {"fullgraph": True, **(compile_options or {})}
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
    return applied


def reset_speedups(pipe: Any, *, uncompile: bool = False) -> None:
    """Takes the cache off, puts the attention backend and the VAE back to diffusers' defaults, and with
    `uncompile=True` drops the compiled blocks (they run eagerly again; a LoRA added afterwards then costs
    no recompilation). TF32 is process-wide and left as it is."""
    transformer = pipe.transformer
    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    if hasattr(transformer, "set_attention_backend"):
        transformer.set_attention_backend(default_attention_backend())
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "disable_tiling"):
        vae.disable_tiling()
    if uncompile:
        _uncompile_blocks(transformer)


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
    "CACHES",
    "CACHE_PARAMS",
    "SpeedProfile",
    "apply_speedups",
    "cache_config",
    "repeated_blocks",
    "default_attention_backend",
    "reset_speedups",
]
