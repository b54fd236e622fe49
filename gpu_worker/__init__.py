"""GPU worker: torch + diffusers processes that consume the GPU lanes. Imports nothing from Django.

contract.py     the job/event contract shared with the backend (standard library only, versioned)
log_context.py  the Dramatiq middleware that carries the log context (also the backend's)
pipelines/      one module per model family: tiny_wan (CPU, tests and embedded), wan22, ltx
execution.py    every GPU job's wrapper: one at a time per GPU, events, timings, reason codes, retries
runner.py       one job: load (cached), LoRA, denoise with progress and cancel, decode, encode, gate, upload
training.py     one Soul ID training: photos -> latents, a peft LoRA with the flow-matching loss, upload
quality.py      the quality gate on the decoded video
video.py        H.264 faststart MP4, poster JPEG, decoding back
storage.py      inputs and outputs by key: local folder or S3
lanes.py        INSTANT, then ECONOMY, then TRAINING; no job held while the GPU is busy
actors.py       one lane actor per job kind (generation, training), the worker; the embedded mode
__main__.py     `python -m gpu_worker`
"""
