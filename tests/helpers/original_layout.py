"""The original system's data layout, tiny: what users bring from its MongoDB and CVAT share.

* every video is two tasks, ``gt_train_<session>_<cam>_<video>`` and ``gt_val_<same>``, whose frames
  interleave (every 5th frame in val), so grouping by task puts one video on both sides;
* frame paths ``fielddata/<season>/<date>/<cam>/<video>/<video>frame0029.png``, numbered in sequence;
* the video id ``GH070066`` recurs in a second session (another recording, another group);
* the task of ``GH020073`` also holds two frames of ``GH010073`` (from that video's folder);
* one frame of ``GH060070`` is in both of its tasks.

:func:`build_original_layout` writes the images and one CVAT XML per task (the local source) and
returns the truth (the recording of every image id); tests feed the XML files to
``original_export.original_documents`` for the same data in MongoDB.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from obdb.sources.cvat_xml import CvatBox, CvatImage, write_cvat_xml

WIDTH, HEIGHT = 32, 24
LABELS = ("weed", "maize")
SESSIONS = {"FieldData_20200508122912": ("season2020", "20200508"),
            "FieldData_20210601080000": ("season2021", "20210601")}
S1, S2 = list(SESSIONS)
#: (session, camera, video): GH070066 in both sessions.
VIDEOS = [(S1, "3R", "GH060070"), (S1, "3R", "GH070066"), (S1, "1L", "GH010073"), (S1, "1L", "GH020073"),
          (S2, "2R", "GH070066"), (S2, "2R", "GH080001"), (S2, "3R", "GH090002"), (S2, "1L", "GH100003")]
FIRST_FRAME, FRAMES = 20, 10


@dataclass
class Layout:
    root: Path
    images_dir: Path
    annotations_dir: Path
    recording: dict[str, str] = field(default_factory=dict)   # image id -> "session/cam/video"
    tasks: list[str] = field(default_factory=list)

    def xml_files(self) -> list[Path]:
        return sorted(self.annotations_dir.glob("*.xml"))


def video_folder(session: str, cam: str, video: str) -> str:
    season, date = SESSIONS[session]
    return f"fielddata/{season}/{date}/{cam}/{video}"


def frame_name(session: str, cam: str, video: str, number: int) -> str:
    return f"{video_folder(session, cam, video)}/{video}frame{number:04d}.png"


def _image(path: Path, rng: np.random.Generator, base: np.ndarray, number: int) -> None:
    """A frame: the video's own colour field, shifted a little each frame (neighbours look alike)."""
    pixels = np.clip(base + rng.normal(0, 4, base.shape) + number, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def build_original_layout(root: Path, seed: int = 0) -> Layout:
    rng = np.random.default_rng(seed)
    layout = Layout(root, root / "share", root / "annotations")
    entries: dict[str, list[CvatImage]] = {}
    borrowed: list[tuple[str, str]] = []  # (name, recording) of GH010073 frames held by GH020073's task
    for session, cam, video in VIDEOS:
        base = rng.uniform(30, 220, (HEIGHT, WIDTH, 3))
        train, val = f"gt_train_{session}_{cam}_{video}", f"gt_val_{session}_{cam}_{video}"
        entries.setdefault(train, [])
        entries.setdefault(val, [])
        recording = f"{session}/{cam}/{video}"
        for index in range(FRAMES):
            number = FIRST_FRAME + index
            name = frame_name(session, cam, video, number)
            _image(layout.images_dir / name, rng, base, number)
            box = CvatBox(LABELS[index % 2], 2 + index % 5, 3, 14 + index % 5, 15)
            if video == "GH010073" and index >= FRAMES - 2:
                borrowed.append((name, recording))
                continue
            task = val if index % 5 == 2 else train
            entries[task].append(CvatImage(len(entries[task]), name, WIDTH, HEIGHT, [box]))
            layout.recording[f"{task}/{name}"] = recording
            if video == "GH060070" and index == 4:  # the same frame file in both tasks
                entries[val].append(CvatImage(len(entries[val]), name, WIDTH, HEIGHT, [box]))
                layout.recording[f"{val}/{name}"] = recording
    holder = f"gt_train_{S1}_1L_GH020073"
    for name, recording in borrowed:
        entries[holder].append(CvatImage(len(entries[holder]), name, WIDTH, HEIGHT, [CvatBox("weed", 1, 1, 9, 9)]))
        layout.recording[f"{holder}/{name}"] = recording
    for task, images in entries.items():
        write_cvat_xml(layout.annotations_dir / f"{task}.xml", task, LABELS, images)
        layout.tasks.append(task)
    return layout


def sides_per_recording(layout: Layout, assignment: dict[str, str]) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = {}
    for image_id, side in assignment.items():
        sides.setdefault(layout.recording[image_id], set()).add(side)
    return sides


def neighbours_across(layout: Layout, assignment: dict[str, str]) -> int:
    """Adjacent frames of one recording (by frame number) on different sides, counted from the
    layout's own truth (not from obdb's name parsing)."""
    frames: dict[str, list[tuple[int, str]]] = {}
    for image_id, side in assignment.items():
        number = int(image_id.rsplit("frame", 1)[1].split(".")[0])
        frames.setdefault(layout.recording[image_id], []).append((number, side))
    count = 0
    for items in frames.values():
        items.sort()
        count += sum(1 for (n1, s1), (n2, s2) in zip(items, items[1:]) if s1 != s2)
    return count
