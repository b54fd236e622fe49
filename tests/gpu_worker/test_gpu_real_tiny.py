"""bench/gpu_real.py at tiny size on the CPU: every measurement of the real-size run goes through the
same code (checkpoint folder, Runner, speed profiles, cancel, LoRA, Trainer, model switch) and lands in
its files. Figures are not checked, only that each one was measured."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_real.py"


@pytest.fixture(scope="module")
def gpu_real():
    spec = importlib.util.spec_from_file_location("bench_gpu_real", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def read_results(out: Path) -> dict[str, dict]:
    lines = (out / "gpu_real.jsonl").read_text().splitlines()
    return {entry["measurement"]: entry for entry in map(json.loads, lines)}


def test_the_tiny_run_measures_everything_the_gpu_run_does(gpu_real, tmp_path):
    out = tmp_path / "out"

    assert gpu_real.main(["--tiny", "--out", str(out), "--budget-s", "600", "--scratch", str(tmp_path)]) == 0

    results = read_results(out)
    assert list(results) == [
        "build",
        "load",
        "baseline",
        "vae decode",
        "warm-up",
        "fastest",
        "lora hotswap (compiled)",
        "fastest, float32 decode",
        "compile",
        "cancel",
        "training batch 1",
        "training batch 4",
        "training batch 8",
        "lora",
        "model switch",
        "first_block 0.05",
        "first_block 0.2",
    ]
    assert {name: r["status"] for name, r in results.items() if r["status"] != "ok"} == {}
    base, fastest = results["baseline"], results["fastest"]
    assert set(base["timings"]) >= {"load", "denoise", "decode", "encode", "quality", "upload", "total"}
    assert base["steps"] == 4 and base["s_per_step"] > 0 and base["text_encode_s"] > 0
    assert fastest["applied"]["compile_blocks"] and fastest["applied"]["cache"] == "taylorseer"
    assert fastest["psnr_db"] > 0  # the cache does not start in 4 steps: the bfloat16 decode's PSNR
    # the decode settings (taken at tiny size whatever the figures), applied by the runner and recorded
    decode = results["vae decode"]
    assert decode["chosen"] == {"vae_decode_dtype": "bfloat16", "cudnn_benchmark": True}
    assert set(decode["variants"]) == {"bfloat16", "bfloat16 + cudnn.benchmark"}
    assert all(v["decode_s"] > 0 and v["psnr_db"] > 30 for v in decode["variants"].values())
    assert fastest["timings"]["speed_profile"]["vae_decode_dtype"] == "bfloat16"
    assert fastest["timings"]["speed_profile"]["cudnn_benchmark"] is True
    previous = results["fastest, float32 decode"]
    assert previous["timings"]["speed_profile"]["vae_decode_dtype"] == "float32"
    assert previous["psnr_db"] == math.inf  # the same frames as the baseline: the decode alone differs
    assert previous["psnr_db_vs_fastest"] == fastest["psnr_db"]
    # the worker's warm-up, seconds per shape (the decode's part apart)
    warm = results["warm-up"]
    assert warm["failed_before"] == [] and list(warm["seconds_per_shape"]) == ["32x32x9"]
    assert list(warm["decode_warm_up_s_per_shape"]) == ["32x32x9"]
    # users' LoRAs into the compiled blocks: the first compiles once, the swap and the scale 0 do not
    hotswap = results["lora hotswap (compiled)"]
    assert [hotswap[k]["graphs_compiled"] for k in ("first LoRA", "second LoRA (hot-swap)", "no LoRA")] == [
        1,
        0,
        0,
    ]
    assert hotswap["slot_holds_second"] is True
    assert results["cancel"]["outcome"] == "stopped" and results["cancel"]["flag_to_return_s"] >= 0
    assert results["lora"]["hotswap_s"] > 0 and results["lora"]["lora_load_s"] > 0
    assert [results[f"training batch {b}"]["timings"]["seconds_per_step"] > 0 for b in (1, 4, 8)] == [
        True
    ] * 3
    assert results["model switch"]["timings"]["load"] > 0
    table = (out / "gpu_real.md").read_text()
    assert "| baseline | 4/4 |" in table and "Headline:" in table and "Soul ID training" in table
    assert "The same profile with the route's float32 decode" in table
    assert "| warm-up | ok | per shape (one step, compile included): 32x32x9" in table
    assert list(tmp_path.glob("gpu-real-*")) == []  # the scratch checkpoint is removed


def test_a_spent_budget_skips_the_measurements_and_still_writes_the_files(gpu_real, tmp_path):
    out = tmp_path / "out"

    assert gpu_real.main(["--tiny", "--out", str(out), "--budget-s", "0", "--scratch", str(tmp_path)]) == 1

    assert [(r["measurement"], r["status"]) for r in read_results(out).values()] == [("build", "skipped")]
    assert "| build | skipped |" in (out / "gpu_real.md").read_text()


def test_psnr_is_infinite_for_identical_clips_and_drops_with_noise(gpu_real):
    import numpy as np

    clip = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    noisy = np.clip(clip.astype(int) + 8, 0, 255).astype(np.uint8)

    assert gpu_real.psnr(clip, clip) == math.inf
    assert 25 < gpu_real.psnr(clip, noisy) < 31
    with pytest.raises(ValueError, match="differ in shape"):
        gpu_real.psnr(clip, clip[:2])


def test_only_restricts_what_runs_after_the_baseline(gpu_real, tmp_path):
    out = tmp_path / "out"

    assert (
        gpu_real.main(["--tiny", "--out", str(out), "--scratch", str(tmp_path), "--only", "vae_decode"]) == 0
    )

    assert [(name, r["status"]) for name, r in read_results(out).items()] == [
        ("build", "ok"),
        ("load", "ok"),
        ("baseline", "ok"),
        ("vae decode", "ok"),
    ]
    with pytest.raises(SystemExit):
        gpu_real.main(["--tiny", "--out", str(out), "--only", "vae_decode,turbo"])
