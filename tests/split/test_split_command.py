"""``obdb split``, the runner's split stage with ``split.method: "tsne"``, and the tsne settings."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

from obdb.cli.main import main
from obdb.settings import SettingsError, load_settings, parse_settings
from obdb.split import SplitManifest, file_split

FAST = {"features": "pixels", "clusters": 2}


def _run(settings_file: Callable[..., Path], *extra: str, **split: Any) -> tuple[int, Path]:
    path = settings_file(split={"method": "tsne", "val_fraction": 0.25, "tsne": FAST, **split})
    return main(["split", "-f", str(path), "--progress", "false", *extra]), path


def test_obdb_split_writes_manifest_report_and_figures(settings_file: Callable[..., Path], tiny_data: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, path = _run(settings_file)
    out = capsys.readouterr().out
    assert code == 0, out
    save_dir = Path(json.loads(path.read_text())["save_dir"])
    manifests = list((save_dir / "splits").glob("*.json"))
    assert len(manifests) == 1
    manifest = SplitManifest.load(manifests[0])
    assert manifest.method == "tsne" and manifest.counts() == {"train": 9, "val": 3}
    folder = save_dir / "splits" / manifest.hash
    report = json.loads((folder / "report.json").read_text())
    assert report["split_hash"] == manifest.hash and report["groups"]["ok"] is True
    assert report["counts"]["val"]["images"] == 3 and set(report["counts"]["train"]["classes"]) == {"red", "blue"}
    assert 0.0 <= report["divergence"]["classes"] <= 1.0 and 0.0 <= report["divergence"]["clusters"] <= 1.0
    assert report["analysis"]["features"]["extractor"] == "pixels-v1"
    assert set(report["leakage"]) >= {"embedding", "dhash", "ok"}
    for name in ("tsne.png", "divergence.png", "thumbnails.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width > 300
    assert (save_dir / "features" / "pixels-v1").is_dir()  # the cache is under save_dir by default
    assert f"split {manifest.hash} (tsne, seed 0): 9 train / 3 val images" in out
    assert "Jensen-Shannon" in out and str(folder / "report.json") in out
    # split.csv reads back as a file split with the same assignment
    assert file_split(_records(tiny_data), folder / "split.csv").assignment == manifest.assignment
    # the same command again: same split, the features come from the cache
    assert main(["split", "-f", str(path), "--progress", "false"]) == 0
    again = json.loads((folder / "report.json").read_text())
    assert again["analysis"]["features"]["cache_misses"] == 0 and again["split_hash"] == manifest.hash


def test_obdb_split_reports_leaks_of_a_random_split(settings_file: Callable[..., Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(split={"method": "random", "val_fraction": 0.5, "tsne": FAST})
    assert main(["split", "-f", str(path), "--progress", "false"]) == 0
    out = capsys.readouterr().out
    save_dir = Path(json.loads(path.read_text())["save_dir"])
    report = json.loads(next((save_dir / "splits").glob("*/report.json")).read_text())
    assert report["method"] == "random" and report["groups"]["ok"] is False and report["groups"]["straddling"]
    assert "groups on both sides: 4 of 4" in out or "groups on both sides: 3 of 4" in out


def test_obdb_split_kfold(settings_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, path = _run(settings_file, "split.tsne.folds=4", "split.fold=2")
    assert code == 0
    assert "4 folds, fold 2 is val" in capsys.readouterr().out
    save_dir = Path(json.loads(path.read_text())["save_dir"])
    manifest = SplitManifest.load(next((save_dir / "splits").glob("*.json")))
    assert sorted(set(manifest.folds.values())) == [0, 1, 2, 3]
    assert set(manifest.ids("val")) == {i for i, f in manifest.folds.items() if f == 2}
    report = json.loads((save_dir / "splits" / manifest.hash / "report.json").read_text())
    assert sorted(report["folds"]) == ["0", "1", "2", "3"] and report["fold"] == 2


@pytest.mark.parametrize("extra,message", [
    (["split.tsne.perplexty=5"], "split.tsne.perplexty: unknown key"),
    (["split.tsne.folds=9"], "needs at least 9 groups, found 4"),
    (["split.fold=1"], "fold needs method 'tsne' with tsne.folds set"),
])
def test_obdb_split_bad_input_exits_2(settings_file: Callable[..., Path], capsys: pytest.CaptureFixture[str],
                                      extra: list[str], message: str) -> None:
    code, _ = _run(settings_file, *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_runner_split_stage_with_tsne(settings_file: Callable[..., Path]) -> None:
    from obdb import pipeline

    path = settings_file(split={"method": "tsne", "val_fraction": 0.25, "tsne": {**FAST, "thumbnails": False}})
    settings = load_settings(path)
    paths = pipeline.run_paths(settings)
    prepared = pipeline.prepare_data(settings, paths, progress=False)
    assert prepared.split.method == "tsne" and prepared.split_file.exists()
    assert len(prepared.train) == 9 and len(prepared.val) == 3
    folder = paths.save_dir / "splits" / prepared.split.hash
    assert (folder / "report.json").is_file() and (folder / "tsne.png").is_file()
    assert not (folder / "thumbnails.png").exists()
    # the default group split writes no report (nothing to compute features for)
    plain = load_settings(path, ["split.method=group"])
    pipeline.prepare_data(plain, pipeline.run_paths(plain), progress=False)
    assert len(list((paths.save_dir / "splits").glob("*/report.json"))) == 1


def _records(tiny_data: Path) -> list:
    from obdb.sources.local import load_local

    return load_local(tiny_data / "annotations", images_dir=tiny_data / "images", progress=False).records


BASE: dict[str, Any] = {"variants": ["resnet18"]}


@pytest.mark.parametrize("split,expected", [
    ({"method": "tsne", "tsne": {"features": "hog"}}, "split.tsne.features: Input should be 'backbone' or 'pixels'"),
    ({"method": "tsne", "tsne": {"clusters": 1}}, 'split.tsne.clusters: expected "auto" or a whole number from 2'),
    ({"method": "tsne", "tsne": {"clusters": "many"}}, "split.tsne.clusters: expected"),
    ({"method": "tsne", "tsne": {"cluster_method": "dbscan"}}, "split.tsne.cluster_method"),
    ({"method": "tsne", "tsne": {"perplexity": 0}}, "split.tsne.perplexity: Input should be greater than 0"),
    ({"method": "tsne", "tsne": {"pca_dims": "50"}}, "split.tsne.pca_dims: Input should be a valid integer"),
    ({"method": "tsne", "tsne": {"folds": 1}}, "split.tsne.folds: Input should be greater than or equal to 2"),
    ({"method": "tsne", "tsne": {"near_duplicate_threshold": 3}}, "split.tsne.near_duplicate_threshold"),
    ({"method": "tsne", "tsne": {"device": "gpu"}}, "split.tsne.device"),
    ({"method": "tsne", "tsne": {"nope": 1}}, "split.tsne.nope: unknown key"),
    ({"method": "tsne", "tsne": {"folds": 3}, "fold": 3}, "split: fold 3 is not a fold of tsne.folds = 3"),
    ({"method": "group", "fold": 0}, "split: fold needs method 'tsne'"),
    ({"method": "tsne", "fold": -1}, "split.fold: Input should be greater than or equal to 0"),
])
def test_tsne_settings_validation(split: dict[str, Any], expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings({**BASE, "split": split}, source="bad.json")
    assert expected in str(info.value)


def test_tsne_settings_defaults_work() -> None:
    tsne = parse_settings({**BASE, "split": {"method": "tsne"}}).split.tsne
    assert (tsne.features, tsne.backbone, tsne.clusters, tsne.cluster_method, tsne.folds) == \
        ("backbone", "resnet18", "auto", "kmeans", None)
    settings = parse_settings({**BASE, "split": {"method": "tsne", "fold": 4, "tsne": {"folds": 5, "clusters": 12}}})
    assert settings.split.fold == 4 and settings.split.tsne.clusters == 12
