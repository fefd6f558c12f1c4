"""Bad input, one table row each, through the real entry points as subprocesses.

Every row prepares its own folder: the shared tiny data set (copied when the row damages it),
the outputs of an earlier run (``train/``, written by hand: weights, parameters, metrics, split,
study, TensorBoard, db export, annotate reports) and the bad input. Then it runs the command a user
would type and checks that

* the exit code is the documented one (2: bad input; 1: ``obdb lint`` found errors),
* the message names the problem: the file and the key / line / task / label,
* no traceback is printed (a user error is not a crash),
* every file that existed before is byte-identical afterwards; a row that fails in the data stage
  may add the run's log (``train/logs/``) and the data check report (``train/lint/``), any other
  row adds nothing.

The rows run side by side. Those that fail before torch is imported, and one row per entry point,
run in a fresh interpreter; the others in processes forked from one that imported obdb once
(``fork_server.py``), which saves each about 5 s of CPU.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers.reliability import (AUTO_ANNOTATE, DAMAGE, OBDB, QUIET, RUNNER, TEST_MODEL, Outcome, changes, fingerprint,
                                 run, run_forked, run_parallel, write_earlier_run, write_model_files)
from helpers.servers import free_port
from helpers.tiny_data import make_tiny_dataset, tiny_settings

# what a run that failed in its data stage may add: its log and the data check report; rows that
# fail earlier (settings, arguments, models) must add nothing at all
ALLOWED_NEW = ("train/logs/", "train/lint/")
DATA_STAGE = ("annotations_", "images_", "settings_task_not_found")
# rows that also run in a fresh interpreter although they import torch: one per entry point
FRESH_HEAVY = {"annotations_malformed_xml", "model_pickle_payload", "model_raw_pickle_payload",
               "images_mixed_obdb_lint"}
FIRST_IMAGE = "video00_frame0000.png"
FIRST_XML = "annotations/gt_train_video00.xml"


@dataclass
class Call:
    """What a row runs and what it must see."""

    argv: list[str]
    expect: list[str]  # substrings of stderr (or of stdout + stderr with ``anywhere``)
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    anywhere: bool = False
    absent: list[Path] = field(default_factory=list)  # files that must not appear (pickle payloads)
    fresh: bool = False  # run in a fresh interpreter (else forked after the imports, see fork_server.py)


@dataclass
class Ctx:
    """One row's folder and the shared inputs."""

    dir: Path
    data: Path
    models: dict[str, Path]
    markers: dict[str, Path]
    mongo_uri: str

    @property
    def save(self) -> Path:
        return self.dir / "train"

    def own_data(self) -> Path:
        """A private copy of the data set, for rows that damage it."""
        if not (self.dir / "data").exists():
            shutil.copytree(self.data, self.dir / "data")
        return self.dir / "data"

    def settings(self, *, text: str | bytes | None = None, data: Path | None = None,
                 mongo: dict[str, Any] | None = None, **changes: Any) -> Path:
        path = self.dir / "settings.json"
        if text is None:
            raw = tiny_settings(data or self.data, self.dir, **changes)
            if mongo is not None:
                raw["data"]["mongo"] = mongo
            text = json.dumps(raw, indent=2)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def runner(self, *extra: str, **changes: Any) -> list[str]:
        return [*RUNNER, "-f", str(self.settings(**changes)), *QUIET, *extra]

    def model_at(self, kind: str) -> Path:
        """The ``kind`` model file placed beside the earlier run's outputs, so that test_model's
        default outputs (``eval/``) would overwrite that run's evaluation if anything were written."""
        target = self.save / "resnet18" / f"{kind}.pt"
        shutil.copyfile(self.models[kind], target)
        return target


def edit_xml(path: Path, edit: Callable[[str], str]) -> Path:
    path.write_text(edit(path.read_text()))
    return path


def damage_all_images(ctx: Ctx, kind: str) -> Path:
    data = ctx.own_data()
    for image in sorted((data / "images").glob("*.png")):
        DAMAGE[kind](image)
    return data / "images" / FIRST_IMAGE


# --------------------------------------------------------------------------- the rows
def settings_rows() -> dict[str, Callable[[Ctx], Call]]:
    def raw(text: str | bytes, *expect: str) -> Callable[[Ctx], Call]:
        def make(c: Ctx) -> Call:
            path = c.settings(text=text)
            return Call([*RUNNER, "-f", str(path), *QUIET], [str(path), *expect], fresh=True)
        return make

    def changed(expect: list[str], *extra: str, **edits: Any) -> Callable[[Ctx], Call]:
        return lambda c: Call(c.runner(*extra, **edits), [str(c.dir / "settings.json"), *expect], fresh=True)

    space = {"lr": [0.02, 0.002], "momentum": [0.8, 0.95]}
    return {
        "settings_invalid_json": raw('{\n  "variants": ["resnet18"],,\n}\n', "invalid JSON at line 2, column 28"),
        "settings_not_utf8": raw(b'{"variants": ["r\xe9snet18"]}', "cannot read settings file"),
        "settings_top_level_list": raw("[1, 2]", "the top level must be a JSON object"),
        "settings_missing_file": lambda c: Call([*RUNNER, "-f", str(c.dir / "nope.json")],
                                                [str(c.dir / "nope.json"), "settings file not found"], fresh=True),
        "settings_wrong_type": changed(["max_train_epochs: Input should be a valid integer", '"ten"'],
                                       max_train_epochs="ten"),
        "settings_unknown_key": changed(["max_plateau: unknown key (did you mean 'max_plateau_count'?)"],
                                        max_plateau=3),
        "settings_negative_epochs": changed(["max_train_epochs: Input should be greater than or equal to 1"],
                                            max_train_epochs=-1),
        "settings_range_low_above_high": changed(["hpo_parameters.lr: low (0.02) is greater than high (0.002)"],
                                                 hpo_parameters=space),
        "settings_empty_variants": changed(["variants: List should have at least 1 item"], variants=[]),
        "settings_unknown_variant": lambda c: Call(c.runner(variants=["resnet19"]),
                                                   ["variants[0] (resnet19)", "resnet19"]),
        "settings_search_without_space": lambda c: Call(
            c.runner(resnet18={"run_hpo": 1}, hpo_parameters={}),
            ["resnet18.run_hpo is 1 but hpo_parameters (or sherpa_parameters) is empty"]),
        "settings_empty_task_list_chosen": changed(["task list 'annotations_list_4k' is empty"],
                                                   "--tasks", "annotations_list_4k", annotations_list_4k=[]),
        "settings_unknown_task_list": changed(["task list 'annotations_list_4k' is not in the settings file"],
                                              "--tasks", "annotations_list_4k"),
        "settings_task_not_found": lambda c: Call(c.runner(annotations_list=["gt_train_video99"]),
                                                  ["task(s) not found: ['gt_train_video99']", "gt_train_video00"]),
        "settings_task_name_not_a_string": changed(["annotations_list[0]: Input should be a valid string"],
                                                   annotations_list=[{"$ne": None}]),
        "settings_bad_override": changed(["train.batch_size: Input should be greater than or equal to 1"],
                                         "train.batch_size=-3"),
        "settings_variants_flag_unknown": lambda c: Call(c.runner("--variants", "resnet50"),
                                                         ["--variants names ['resnet50']"]),
        "settings_pretrained_missing": lambda c: Call(
            c.runner(resnet18={"run_hpo": 0, "pretrained_model_path": str(c.dir / "gone.pt")}),
            ["resnet18.pretrained_model_path: file not found", str(c.dir / "gone.pt")]),
    }


def annotation_rows() -> dict[str, Callable[[Ctx], Call]]:
    def xml(edit: Callable[[str], str], *expect: str) -> Callable[[Ctx], Call]:
        def make(c: Ctx) -> Call:
            data = c.own_data()
            path = edit_xml(data / FIRST_XML, edit)
            return Call(c.runner(data=data), [str(path), *expect])
        return make

    def extra_file(name: str, text: str, *expect: str) -> Callable[[Ctx], Call]:
        def make(c: Ctx) -> Call:
            data = c.own_data()
            (data / "annotations" / name).write_text(text)
            return Call(c.runner(data=data), [str(data / "annotations" / name), *expect])
        return make

    def boxes_outside(c: Ctx) -> Call:
        data = c.own_data()
        for path in (data / "annotations").glob("*.xml"):
            edit_xml(path, lambda t: re.sub(r'xtl="[\d.]+" ytl="[\d.]+" xbr="[\d.]+" ybr="[\d.]+"',
                                            'xtl="200" ytl="250" xbr="230" ybr="290"', t))
        return Call(c.runner(data=data), ["no boxes with the labels ['red', 'blue'] remain",
                                          f"gt_train_video00/{FIRST_IMAGE} (96x96)", "[200, 250,"])

    def unknown_labels(c: Ctx) -> Call:
        data = c.own_data()
        for path in (data / "annotations").glob("*.xml"):
            edit_xml(path, lambda t: re.sub(r'label="(red|blue)"', 'label="green"', t))
        return Call(c.runner(data=data), ["no boxes with the labels ['red', 'blue'] remain",
                                          "unknown labels (boxes): green=", FIRST_IMAGE])

    def empty_task(c: Ctx) -> Call:
        data = c.own_data()
        for path in (data / "annotations").glob("*.xml"):
            if path.name != "gt_train_video00.xml":
                path.unlink()
        path = edit_xml(data / FIRST_XML, lambda t: re.sub(r"<image .*?</image>", "", t, flags=re.S))
        return Call(c.runner(data=data), [f"{path} (task gt_train_video00)", "hold no images", "no usable images"])

    def duplicate_task(c: Ctx) -> Call:
        data = c.own_data()
        shutil.copyfile(data / FIRST_XML, data / "annotations" / "copy_of_video00.xml")
        return Call(c.runner(data=data), [f"duplicate image id 'gt_train_video00/{FIRST_IMAGE}'",
                                          str(data / "annotations" / "copy_of_video00.xml")])

    def no_annotation_files(c: Ctx) -> Call:
        data = c.own_data()
        shutil.rmtree(data / "annotations")
        (data / "annotations").mkdir()
        return Call(c.runner(data=data), [str(data / "annotations"), "folder holds no annotation files"])

    def images_missing(c: Ctx) -> Call:
        data = c.own_data()
        shutil.rmtree(data / "images")
        (data / "images").mkdir()
        return Call(c.runner(data=data), [str(data / "images" / FIRST_IMAGE), "image file not found",
                                          "no usable images left"])

    coco = {"images": [{"id": 1, "file_name": FIRST_IMAGE, "width": 96, "height": 96}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 7, "bbox": [1, 1, 20, 20]}],
            "categories": [{"id": 1, "name": "red"}]}
    return {
        "annotations_malformed_xml": xml(lambda t: t[:700], "malformed XML at line"),
        "annotations_coordinate_not_a_number": xml(lambda t: t.replace('xtl="', 'xtl="abc', 1),
                                                   f"image '{FIRST_IMAGE}'", "xtl is not a number"),
        "annotations_malformed_json": extra_file("coco.json", '{"images": [1, 2,,]}', "malformed JSON at line 1"),
        "annotations_json_not_coco": extra_file("other.json", '{"foo": 1}', "unknown annotation format"),
        "annotations_unknown_category": extra_file("coco.json", json.dumps(coco), "annotation id 5",
                                                   "unknown category_id 7"),
        "annotations_boxes_outside_image": boxes_outside,
        "annotations_unknown_labels_only": unknown_labels,
        "annotations_empty_task": empty_task,
        "annotations_duplicate_task": duplicate_task,
        "annotations_no_files": no_annotation_files,
        "annotations_images_missing": images_missing,
    }


def image_rows() -> dict[str, Callable[[Ctx], Call]]:
    reasons = {"truncated": "corrupt or truncated image", "zero_bytes": "empty image file (0 bytes)",
               "text_named_png": "not a readable image", "huge_header": "image too large to open safely"}

    def only(kind: str) -> Callable[[Ctx], Call]:
        def make(c: Ctx) -> Call:
            first = damage_all_images(c, kind)
            return Call(c.runner(data=c.dir / "data"), [str(first), reasons[kind], "no usable images left",
                                                         "source_skipped"])
        return make

    rows = {f"images_only_{kind}": only(kind) for kind in DAMAGE}

    def lint_mixed(c: Ctx) -> Call:  # obdb lint: exit 1 and every damaged file named
        data = c.own_data()
        images = sorted((data / "images").glob("*.png"))
        for kind, path in zip(DAMAGE, images[1::2]):
            DAMAGE[kind](path)
        return Call([*OBDB, "lint", "-f", str(c.settings(data=data)), *QUIET], code=1, anywhere=True,
                    expect=[f"{p}: {reasons[k]}" for k, p in zip(DAMAGE, images[1::2])] + ["4 issue(s) at or above"])

    rows["images_mixed_obdb_lint"] = lint_mixed
    return rows


def flag_rows() -> dict[str, Callable[[Ctx], Call]]:
    folder = lambda c: str(c.data / "images")  # noqa: E731
    return {
        "flag_progress_not_a_boolean": lambda c: Call(c.runner("--progress", "maybe"),
                                                      ["--progress", "expected a boolean", "'maybe'"], fresh=True),
        "flag_check_false_is_refused": lambda c: Call(c.runner("--check", "False"),
                                                      ["override 'False'", "takes no value"], fresh=True),
        "flag_annotate_dry_run_false_is_refused": lambda c: Call(
            [*AUTO_ANNOTATE, "folder", folder(c), "-m", str(c.models["good"]), "--dry-run", "False",
             "--out", str(c.save / "annotate_out")], ["unrecognized arguments: False"], fresh=True),
        "flag_sync_dry_run_false_is_refused": lambda c: Call([*OBDB, "sync", "--dry-run", "False"],
                                                             ["unrecognized arguments: False"], fresh=True),
        "flag_threshold_out_of_range": lambda c: Call(
            [*AUTO_ANNOTATE, "folder", folder(c), "-m", str(c.models["good"]), "-t", "1.5",
             "--out", str(c.save / "annotate_out")], ["-t/--threshold", "must be within [0, 1], got 1.5"],
            fresh=True),
        "flag_iou_zero": lambda c: Call([*TEST_MODEL, "-m", str(c.model_at("good")), "--iou", "0"],
                                        ["--iou", "the IoU threshold must be above 0"], fresh=True),
        "flag_lint_fail_on_unknown": lambda c: Call([*OBDB, "lint", "-f", str(c.settings()), "--fail-on", "info"],
                                                    ["--fail-on", "invalid choice: 'info'"], fresh=True),
    }


def model_rows() -> dict[str, Callable[[Ctx], Call]]:
    def scored(kind: str, *expect: str) -> Callable[[Ctx], Call]:
        def make(c: Ctx) -> Call:
            model = c.model_at(kind)
            return Call([*TEST_MODEL, "-m", str(model), "--annotations", str(c.data / "annotations"), "--images",
                         str(c.data / "images"), *QUIET], [str(model), *expect],
                        absent=[c.markers[kind]] if kind in c.markers else [])
        return make

    def annotated(kind: str, *expect: str) -> Callable[[Ctx], Call]:
        def make(c: Ctx) -> Call:
            model = c.model_at(kind)
            return Call([*AUTO_ANNOTATE, "folder", str(c.data / "images"), "-m", str(model),
                         "--out", str(c.save / "annotate_out"), *QUIET], [str(model), *expect],
                        absent=[c.markers[kind]] if kind in c.markers else [])
        return make

    def pretrained(kind: str, *expect: str) -> Callable[[Ctx], Call]:
        def make(c: Ctx) -> Call:
            model = c.model_at(kind)
            return Call(c.runner(resnet18={"run_hpo": 0, "pretrained_model_path": str(model)}),
                        ["resnet18.pretrained_model_path", str(model), *expect],
                        absent=[c.markers[kind]] if kind in c.markers else [])
        return make

    refused = "pickled models are refused"
    return {
        "model_wrong_architecture": scored("wrong_architecture", "wrong architecture",
                                           "do not fit a mobilenet_v3_small fcos model"),
        "model_pickle_payload": scored("pickle_payload", refused, "Unsupported global: GLOBAL io.open"),
        "model_raw_pickle_payload": annotated("raw_pickle_payload", refused),
        "model_pickle_as_pretrained_weights": pretrained("pickle_payload", refused),
        "model_truncated": scored("truncated", "is not a state_dict file"),
        "model_truncated_as_pretrained_weights": pretrained("truncated", "is not a state_dict file"),
        "model_json_file": annotated("json", "is not a state_dict file"),
        "model_raw_state_dict": scored("raw_state_dict", "is not an obdb model file"),
    }


def service_rows() -> dict[str, Callable[[Ctx], Call]]:
    """obdb db / sync / split: bad snapshot files, an unreachable server, a bad split setting."""
    def unreachable(c: Ctx) -> dict[str, Any]:
        return {"uri": f"mongodb://127.0.0.1:{free_port()}/", "timeout_s": 1.0, "retries": 0}

    def import_unknown_name(c: Ctx) -> Call:
        (c.dir / "dump.json").write_text('{"name": "t"}\n')
        return Call([*OBDB, "db", "import", str(c.dir / "dump.json"), *QUIET],
                    [str(c.dir / "dump.json"), "cannot tell the collection from the file name"], fresh=True)

    def import_malformed_line(c: Ctx) -> Call:
        (c.dir / "snap").mkdir()
        (c.dir / "snap" / "tasks.json").write_text('{"name": "a", "type": "task_data"}\n{"name": "b",,}\n')
        return Call([*OBDB, "db", "import", str(c.dir / "snap"), "--database", "obdb_bad_input", *QUIET],
                    [f"{c.dir / 'snap' / 'tasks.json'}:2: malformed JSON line"], env={"MONGODB_URI": c.mongo_uri},
                    fresh=True)

    def export_unreachable(c: Ctx) -> Call:
        settings = c.settings(mongo=unreachable(c))
        return Call([*OBDB, "db", "export", "-f", str(settings), "--out", str(c.save / "db_export"), *QUIET],
                    ["MongoDB at 127.0.0.1:", "is not reachable after 1 attempt(s)"], code=3, fresh=True)

    def sync_unreachable(c: Ctx) -> Call:
        settings = c.settings(mongo=unreachable(c))
        return Call([*OBDB, "sync", "-f", str(settings), *QUIET],  # unreachable after retries: exit 3
                    ["MongoDB at 127.0.0.1:", "is not reachable after 1 attempt(s)"], code=3, fresh=True)

    return {
        "service_db_import_unknown_file_name": import_unknown_name,
        "service_db_import_malformed_line": import_malformed_line,
        "service_db_export_server_unreachable": export_unreachable,
        "service_sync_server_unreachable": sync_unreachable,
        "service_split_unknown_method": lambda c: Call(
            [*OBDB, "split", "-f", str(c.settings()), "split.method=every10th", *QUIET],
            [str(c.dir / "settings.json"), "split.method: Input should be 'group', 'random', 'file' or 'tsne'"]),
    }


ROWS: dict[str, Callable[[Ctx], Call]] = {**settings_rows(), **annotation_rows(), **image_rows(), **flag_rows(),
                                          **model_rows(), **service_rows()}


# --------------------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """The tiny data set, the model files (a good random-init one and the bad ones) and the files
    the pickle payloads would create."""
    root = tmp_path_factory.mktemp("inputs")
    data = make_tiny_dataset(root / "data", videos=3, frames=3)
    models, markers = write_model_files(root / "models")
    return data, models, markers


@dataclass
class RowResult:
    call: Call
    outcome: Outcome
    before: dict[str, str]
    after: dict[str, str]


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest, inputs: tuple[Path, dict[str, Path], dict[str, Path]],
            mongo_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, RowResult]:
    """Every selected row, run side by side; prepared and fingerprinted before, fingerprinted after."""
    data, models, markers = inputs
    selected = [item.callspec.params["row"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")]
    base = tmp_path_factory.mktemp("rows")
    prepared: dict[str, tuple[Ctx, Call, dict[str, str]]] = {}
    for name in dict.fromkeys(selected):
        ctx = Ctx(base / name, data, models, markers, mongo_server)
        write_earlier_run(ctx.save)
        call = ROWS[name](ctx)
        prepared[name] = (ctx, call, fingerprint(ctx.dir))
    fresh = [n for n, (_, call, _) in prepared.items() if call.fresh or n in FRESH_HEAVY]
    forked = [n for n in prepared if n not in fresh]
    jobs = [lambda: run_forked([(prepared[n][1].argv, prepared[n][1].env) for n in forked], base / ".forked")
            ] if forked else []
    jobs += [lambda call=prepared[n][1]: [run(call.argv, env=call.env)] for n in fresh]
    outcomes = dict(zip(forked + fresh, [o for batch in run_parallel(jobs) for o in batch]))
    return {name: RowResult(call, outcomes[name], before, fingerprint(ctx.dir))
            for name, (ctx, call, before) in prepared.items()}


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input(row: str, results: dict[str, RowResult]) -> None:
    result = results[row]
    out, call = result.outcome, result.call
    assert out.code == call.code, out.text
    assert "Traceback" not in out.stderr, out.text
    shown = out.stdout + out.stderr if call.anywhere else out.stderr
    for text in call.expect:
        assert text in shown, f"{text!r} not in the output\n{out.text}"
    allowed = ALLOWED_NEW if row.startswith(DATA_STAGE) else ()
    assert changes(result.before, result.after, allowed) == [], out.text
    for path in call.absent:
        assert not path.exists(), f"{path} was created: pickled code ran"


def test_there_are_at_least_30_distinct_rows() -> None:
    assert len(ROWS) >= 30
    kinds = {name.split("_")[0] for name in ROWS}
    assert kinds == {"settings", "annotations", "images", "flag", "model", "service"}
