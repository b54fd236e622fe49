"""GPU worker: torch + diffusers processes that consume the GPU lanes. Imports nothing from Django."""
