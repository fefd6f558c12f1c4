"""A tiny synthetic detection data set and the settings for it.

The images are small (96 px) coloured squares on noise, so a random-init detector runs a few
optimizer steps per second on a CPU and end-to-end tests stay within a minute or two.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from obdb.sources.cvat_xml import CvatBox, CvatImage, write_cvat_xml

LABELS = ("red", "blue")
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def make_tiny_dataset(root: Path, *, videos: int = 4, frames: int = 3, size: int = 96, seed: int = 0) -> Path:
    """``videos`` CVAT tasks (one per "video", the natural split group) of ``frames`` images each."""
    rng = random.Random(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for video in range(videos):
        task = f"gt_train_video{video:02d}"
        entries = []
        for frame in range(frames):
            pixels = np.random.default_rng(seed * 1000 + video * 10 + frame).integers(90, 140, (size, size, 3))
            array = pixels.astype(np.uint8)
            boxes = []
            for _ in range(rng.randint(1, 3)):
                label = rng.choice(LABELS)
                w, h = rng.randint(18, 34), rng.randint(18, 34)
                x, y = rng.randint(0, size - w - 1), rng.randint(0, size - h - 1)
                array[y:y + h, x:x + w] = COLOURS[label]
                boxes.append(CvatBox(label, x, y, x + w, y + h))
            name = f"video{video:02d}_frame{frame:04d}.png"
            Image.fromarray(array).save(images_dir / name)
            entries.append(CvatImage(frame, name, size, size, boxes))
        write_cvat_xml(root / "annotations" / f"{task}.xml", task, LABELS, entries)
    return root


def tiny_settings(data: Path, out: Path, **changes: Any) -> dict[str, Any]:
    """Settings for ``make_tiny_dataset`` data in the original file's shape plus our blocks."""
    settings: dict[str, Any] = {
        "experiment": "tiny",
        "variants": ["resnet18"],
        "resnet18": {"run_hpo": 0, "use_settings_file": 1,
                     "optimal_hpo_settings": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001,
                                              "step_size": 3, "gamma": 0.5}},
        "max_plateau_count": 5,
        "max_train_epochs": 2,
        "search_epochs": 1,
        "num_initial_data_points": 1,
        "max_num_trials": 3,
        "annotations_list": [],
        "save_dir": str(out / "train"),
        "writer_dir": str(out / "train" / "runs"),
        "dataset_dir": str(data),
        "hpo_parameters": {"lr": [0.002, 0.02], "momentum": [0.8, 0.95], "weight_decay": [1e-5, 1e-3],
                           "step_size": [1, 3], "gamma": [0.1, 0.5]},
        "default_class_map": ["Background", *LABELS],
        "data": {"images_dir": str(data / "images")},
        "split": {"method": "group", "val_fraction": 0.25},
        "model": {"min_size": 96, "max_size": 96, "pretrained": "none"},  # no downloads in tests
        "train": {"batch_size": 3, "workers": 0, "device": "cpu", "warmup_iters": 2},
        "hpo": {"pruner": "none"},
    }
    for key, value in changes.items():
        settings[key] = value
    return settings
