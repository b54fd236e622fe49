"""Image moderation on the GPU worker: a transformers image classifier, loaded from a folder under
MODEL_ROOT, scores the input photo before denoising and a few frames of the output before upload.

The model is any `AutoModelForImageClassification` checkpoint whose labels (`config.id2label`) are the
categories (e.g. "normal", "nsfw"); the backend sends the thresholds per category (`ModerationSpec`), so
what flags is decided there (settings, a trend's stricter overrides), and the worker only measures.
A single-label model's scores are its softmax; a multi-label one's (`problem_type ==
"multi_label_classification"`) its sigmoids.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_worker.contract import ModerationSpec, ModerationVerdict
from gpu_worker.pipelines import ModelUnavailable

logger = logging.getLogger(__name__)


class ImageClassifier:
    """One classifier checkpoint, loaded once: `scores(images)` is each label's highest score."""

    def __init__(self, folder: Path, *, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.processor = AutoImageProcessor.from_pretrained(folder)
        self.model = AutoModelForImageClassification.from_pretrained(folder).to(device).eval()
        self.device = device
        self.labels = [str(self.model.config.id2label[i]) for i in range(self.model.config.num_labels)]
        self.multi_label = self.model.config.problem_type == "multi_label_classification"

    @torch.no_grad()
    def scores(self, images: Sequence[Any]) -> dict[str, float]:
        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        logits = self.model(**inputs).logits.float()
        probabilities = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
        highest = probabilities.max(dim=0).values.cpu().tolist()
        return {label: round(float(score), 4) for label, score in zip(self.labels, highest, strict=True)}


def verdict(scores: Mapping[str, float], spec: ModerationSpec) -> ModerationVerdict:
    """Flagged when any category with a threshold scores at or above it."""
    limits = spec.thresholds
    flagged = sorted(label for label, score in scores.items() if label in limits and score >= limits[label])
    return {"flagged": bool(flagged), "categories": flagged, "scores": dict(scores), "model": spec.model}


def sample_frames(frames: np.ndarray, count: int) -> list[Any]:
    """`count` frames spread evenly over a clip of uint8 frames (T, H, W, 3), as PIL images."""
    from PIL import Image

    indexes = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    return [Image.fromarray(frames[i]) for i in dict.fromkeys(indexes.tolist())]


class Moderator:
    """The worker's classifiers by folder (usually one), loaded on first use and kept."""

    def __init__(self, model_root: Path, *, device: str = "cpu") -> None:
        self.model_root = Path(model_root)
        self.device = device
        self._classifiers: dict[str, ImageClassifier] = {}
        self._lock = threading.Lock()

    def classifier(self, model: str) -> ImageClassifier:
        with self._lock:
            if model not in self._classifiers:
                folder = self.model_root / model
                if not (folder / "config.json").is_file():
                    raise ModelUnavailable(f"the moderation model {model!r} is not in {self.model_root}")
                self._classifiers[model] = ImageClassifier(folder, device=self.device)
                logger.info("moderation model %s loaded on %s", model, self.device)
            return self._classifiers[model]

    def check(self, spec: ModerationSpec, images: Sequence[Any]) -> ModerationVerdict:
        return verdict(self.classifier(spec.model).scores(images), spec)
