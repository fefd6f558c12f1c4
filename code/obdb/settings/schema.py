"""Typed settings: what one JSON file may say, with every value checked before anything runs.

The models are strict (no silent ``"10"`` → 10 coercion) and forbid unknown keys, so a typo is an
error naming its key path instead of a default quietly used for a week of training. Keys of the
original system's files are accepted by :mod:`obdb.settings.legacy`, which maps them onto these
models before validation.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

from ..paths import UnsafeName, safe_component
from ..records import check_class_names, normalise_label

#: Hyperparameters a trial (or a fixed run) sets. Everything else about training is a setting.
HYPERPARAMETERS = ("lr", "momentum", "weight_decay", "step_size", "gamma", "freeze_backbone_epochs")
#: Searched as integers unless ``integer`` says otherwise.
INTEGER_PARAMETERS = ("step_size", "freeze_backbone_epochs")
#: Sampled on a log scale unless ``hpo.log_scale`` says otherwise (as the original system did).
DEFAULT_LOG_SCALE = ("lr", "weight_decay", "momentum", "gamma")


def _flag(value: Any) -> Any:
    """The original files write flags as 0/1; accept those and real booleans, nothing else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected true/false or 0/1, got {value!r}")


Flag = Annotated[bool, BeforeValidator(_flag)]
PositiveInt = Annotated[int, Field(ge=1)]


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


OptionalPath = Annotated[Optional[str], BeforeValidator(_empty_to_none)]


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", validate_default=True)


class HyperParams(StrictModel):
    """One point of the search space: what SGD + StepLR need."""

    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, lt=1)
    step_size: PositiveInt = 3
    gamma: float = Field(0.1, gt=0, le=1)
    freeze_backbone_epochs: Optional[int] = Field(None, ge=0, description="searched: epochs that train only the "
                                                  "FPN and head; None: model.freeze_backbone_epochs")


class ParamRange(StrictModel):
    """A search dimension. The legacy form ``[low, high]`` is turned into this by the loader."""

    low: float
    high: float
    log: Optional[bool] = None
    integer: Optional[bool] = None

    @model_validator(mode="after")
    def _check(self) -> "ParamRange":
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        return self


class VariantSettings(StrictModel):
    """Per-variant block, keyed by the variant name at the top level of the file."""

    run_hpo: Flag = True
    use_settings_file: Flag = True
    optimal_hpo_settings: Optional[HyperParams] = None
    pretrained_model_path: OptionalPath = None
    backbone: Optional[str] = None
    head: Optional[Literal["faster_rcnn", "retinanet", "fcos"]] = None


class MongoSettings(StrictModel):
    """``data.mongo``: the original system's MongoDB layout (database ``annotations``).

    No password here: it comes from ``MONGODB_URI`` / ``MONGODB_PASSWORD`` /
    ``MONGODB_PASSWORD_FILE`` in the environment (see obdb.mongo.connection)."""

    uri: Optional[str] = Field(None, description="mongodb:// URI without a password; env MONGODB_URI wins")
    host: str = "localhost"
    port: int = Field(27017, ge=1, le=65535)
    username: Optional[str] = None
    auth_source: str = "admin"
    database: str = Field("annotations", min_length=1)
    timeout_s: float = Field(10.0, gt=0, le=600)
    retries: int = Field(4, ge=0, le=50)
    polygons: Literal["bbox", "skip"] = Field("bbox", description="older name of data.polygons (skip wins)")
    include_auto: Literal["accepted", "all", "none"] = Field(
        "accepted", description="model proposals (source auto) trained on and scored against: those a person "
        "accepted (review=accepted), all, or none (see obdb.sources.truth)")


class CvatSettings(StrictModel):
    """``data.cvat``: train straight from CVAT tasks (``annotations_list`` names them).

    Credentials come from ``CVAT_URL`` / ``CVAT_USERNAME`` / ``CVAT_PASSWORD`` (or
    ``CVAT_ACCESS_TOKEN``) in the environment, never from this file."""

    url: Optional[str] = Field(None, description="server URL; env CVAT_URL wins")
    cache_dir: Optional[str] = Field(None,
                                     description="downloaded frames and annotations; default <save_dir>/cvat_cache")
    offline: bool = Field(False, description="use only the cache (no server needed)")
    allow_version_mismatch: bool = False
    retries: int = Field(4, ge=0, le=50, description="extra tries of a request on connection errors and 5xx")
    include_auto: Literal["accepted", "all", "none"] = Field(
        "accepted", description="model proposals (source auto) trained on and scored against: those a person "
        "accepted (review=accepted), all, or none (see obdb.sources.truth)")


class DataSettings(StrictModel):
    """Where annotations come from. Relative paths are taken from the working directory."""

    source: Literal["local", "mongo", "cvat"] = "local"
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    cvat: CvatSettings = Field(default_factory=CvatSettings)
    annotations: list[str] = Field(default_factory=list,
                                   description="annotation files or folders; default <dataset_dir>/annotations")
    images_dir: Optional[str] = Field(None, description="default: dataset_dir")
    keep_empty: bool = True
    include_auto: Literal["accepted", "all", "none"] = Field(
        "accepted", description="local files: model proposals (source=\"auto\" in a CVAT XML export) trained on "
        "and scored against: those a person accepted (review=accepted), all, or none")
    polygons: Literal["bbox", "skip"] = Field("bbox", description="polygon and points shapes, every source: "
                                              "train on their bounding box, or skip them")
    label_map: dict[str, Optional[str]] = Field(default_factory=dict)
    group_regex: Optional[str] = Field(None, description="split group: first match (capture group 1, else the "
                                       "whole match) in the image file name, then its relative path, then the task "
                                       "name; default: the recording (image folder joined with the task name "
                                       "without gt_train_/gt_val_/... prefixes)")
    excluded_frames: list[str] = Field(default_factory=list)
    full_hd: Flag = Field(False, description="frames larger than 1920x1080 are cropped to their bottom-centre "
                          "full-HD region (boxes clipped, boxes outside dropped); legacy key full_hd")

    @field_validator("label_map")
    @classmethod
    def _label_map_targets(cls, value: dict[str, Optional[str]]) -> dict[str, Optional[str]]:
        """Targets follow the one label rule (obdb.records.normalise_label); keys stay as written
        so a label with a control character in the data can be renamed here."""
        return {key: normalise_label(target, f"key {key!r}") if target else target
                for key, target in value.items()}

    @model_validator(mode="after")
    def _regex_compiles(self) -> "DataSettings":
        if self.group_regex is not None:
            try:
                re.compile(self.group_regex)
            except re.error as err:
                raise ValueError(f"group_regex is not a valid regular expression: {err}") from err
        return self


class LintSettings(StrictModel):
    """``lint``: data set checks between loading and the split (see :mod:`obdb.lint`).

    Sizes are pixels of the original image. Bad images are left out and bad boxes dropped or
    clipped; every change is listed in ``<save_dir>/lint/report.{json,md}``."""

    enabled: bool = True
    check_decode: bool = Field(True, description="decode every image fully (finds truncated files)")
    min_image_size: Optional[PositiveInt] = Field(None, description="leave out images narrower or lower than this")
    max_image_size: Optional[PositiveInt] = Field(None, description="leave out images wider or higher than this")
    min_box_size: float = Field(1.0, ge=0, le=10000, description="drop boxes narrower or lower than this")
    duplicate_box_iou: float = Field(0.95, gt=0, le=1, description="same-label boxes overlapping this much: keep one")
    near_duplicate_hamming: Optional[int] = Field(4, ge=0, le=16, description="64-bit dHash bits; null: no check")
    drop_near_duplicates: bool = False
    fix_out_of_bounds: Literal["clip", "drop"] = "clip"

    @model_validator(mode="after")
    def _size_range(self) -> "LintSettings":
        if self.min_image_size and self.max_image_size and self.max_image_size < self.min_image_size:
            raise ValueError(f"max_image_size ({self.max_image_size}) is smaller than min_image_size "
                             f"({self.min_image_size})")
        return self


def _cluster_count(value: Any) -> Any:
    """``"auto"`` or a whole number of clusters (one message instead of one per union member)."""
    if value == "auto" or (type(value) is int and 2 <= value <= 1000):
        return value
    raise ValueError(f"expected \"auto\" or a whole number from 2 to 1000, got {value!r}")


class TsneSplitSettings(StrictModel):
    """``split.tsne``: features → PCA → clusters → group-balanced split, t-SNE map for the report.
    The defaults work without any weights file (see obdb.split.features for the fallback)."""

    features: Literal["backbone", "pixels"] = "backbone"
    backbone: str = Field("resnet18", min_length=1)
    image_size: int = Field(224, ge=32, le=1024)
    crops: bool = False
    batch_size: PositiveInt = 16
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    cache_dir: Optional[str] = Field(None, description="feature cache; default <save_dir>/features")
    pca_dims: int = Field(50, ge=2, le=1024)
    perplexity: float = Field(30.0, gt=0, le=500)
    tsne_backend: Literal["opentsne", "sklearn"] = "opentsne"
    tsne_fit_points: int = Field(25000, ge=100, description="larger sets: fit on a sample, place the rest")
    clusters: Annotated[Union[int, Literal["auto"]], BeforeValidator(_cluster_count)] = "auto"
    cluster_method: Literal["kmeans", "hdbscan"] = "kmeans"
    cluster_space: Literal["features", "tsne"] = "features"
    min_cluster_size: int = Field(10, ge=2)
    balance_classes: bool = True
    restarts: int = Field(4, ge=1, le=100)
    folds: Optional[int] = Field(None, ge=2, le=100)
    near_duplicate_threshold: float = Field(0.05, ge=0, le=2)
    dhash: bool = True
    dhash_threshold: int = Field(4, ge=0, le=16)
    link_near_duplicates: bool = False
    thumbnails: bool = True
    max_report_pairs: int = Field(1000, ge=0)


class SplitSettings(StrictModel):
    method: Literal["group", "random", "file", "tsne"] = "group"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    file: Optional[str] = None
    seed: Optional[int] = None
    fold: Optional[int] = Field(None, ge=0, description="k-fold (split.tsne.folds): the fold used as val")
    fail_on_leak: bool = Field(False, description="a split with groups on both sides or neighbouring frames "
                               "across sides is an error (exit 2) instead of a warning")
    neighbour_max_gap: int = Field(10, ge=0, le=100000, description="frame numbers at most this far apart "
                                   "(same folder and name stem) count as neighbouring frames")
    tsne: TsneSplitSettings = Field(default_factory=TsneSplitSettings)

    @model_validator(mode="after")
    def _file_needs_path(self) -> "SplitSettings":
        if self.method == "file" and not self.file:
            raise ValueError("method 'file' needs split.file (a JSON split manifest or CSV image,split)")
        if self.fold is not None:
            if self.method != "tsne" or self.tsne.folds is None:
                raise ValueError("fold needs method 'tsne' with tsne.folds set (k-fold cross-validation)")
            if self.fold >= self.tsne.folds:
                raise ValueError(f"fold {self.fold} is not a fold of tsne.folds = {self.tsne.folds} "
                                 f"(folds are numbered 0 to {self.tsne.folds - 1})")
        return self


PRETRAINED_KEYWORDS = ("imagenet", "coco", "none")


class ModelSettings(StrictModel):
    head: Literal["faster_rcnn", "retinanet", "fcos"] = "faster_rcnn"
    min_size: PositiveInt = 800
    max_size: PositiveInt = 1333
    trainable_layers: int = Field(3, ge=0, le=5)
    pretrained: str = Field("imagenet", min_length=1, description="imagenet (backbone), coco (whole detector "
                            "where torchvision has it), none (random init) or the path of a backbone state_dict")
    freeze_backbone_epochs: int = Field(0, ge=0, description="first epochs train only the FPN and head")
    weights_dir: Optional[str] = Field(None, description="weights folder searched first; then $OBDB_WEIGHTS_DIR "
                                       "and the torch hub cache, where missing files are downloaded")

    @model_validator(mode="after")
    def _sizes(self) -> "ModelSettings":
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) is smaller than min_size ({self.min_size})")
        return self

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, value: str) -> str:
        if value not in PRETRAINED_KEYWORDS and not value.endswith((".pth", ".pt")):
            raise ValueError(f"{value!r} is not one of {', '.join(PRETRAINED_KEYWORDS)} nor a weights file (.pth/.pt)")
        return value


class TrainSettings(StrictModel):
    batch_size: PositiveInt = 4
    eval_batch_size: Optional[PositiveInt] = None
    workers: int = Field(2, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    amp: bool = True
    warmup_iters: int = Field(100, ge=0)
    hflip: float = Field(0.5, ge=0, le=1)
    photometric: bool = True
    max_detections: Annotated[int, Field(ge=10)] = 100  # COCO scores maxDets 1, 10 and this
    cache_images: bool = Field(True, description="decode every image once, at the network's input size, into a "
                               "cache all trials share (see image_cache.py); false decodes files every epoch")
    cache_dir: Optional[str] = Field(None, description="image cache folder; default <save_dir>/image_cache")


class HpoSettings(StrictModel):
    storage: Optional[str] = Field(None, description="Optuna storage URL; default sqlite file in save_dir. "
                                   "The env var OBDB_OPTUNA_STORAGE wins, so passwords stay out of the file.")
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_warmup_epochs: int = Field(1, ge=0, description="epochs a trial runs before it may be pruned")
    pruner_startup_trials: int = Field(2, ge=0, description="median: completed trials before any pruning")
    warm_start_from: list[str] = Field(default_factory=list, description="earlier studies (names in the same "
                                       "storage) or best_params.json files whose best parameters a new study "
                                       "tries first, after optimal_hpo_settings")
    low_fidelity_epochs: int = Field(0, ge=0, description="first epochs of a trial trained on a random subset")
    low_fidelity_fraction: float = Field(0.5, gt=0, le=1, description="share of the training images in those epochs")
    metric: Literal["map", "map50", "map75"] = "map"
    log_scale: list[str] = Field(default_factory=lambda: list(DEFAULT_LOG_SCALE))
    timeout: Optional[float] = Field(None, gt=0, description="seconds; legacy hpo_timeout")
    heartbeat_interval: int = Field(30, ge=1, le=3600, description="seconds between a running trial's "
                                    "heartbeats (shared PostgreSQL/MySQL storages)")
    grace_period: int = Field(120, ge=2, le=86400, description="seconds without a heartbeat after which a "
                              "trial counts as killed and is retried")
    max_retry: int = Field(2, ge=0, le=100, description="times a killed worker's trial is run again")

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> "HpoSettings":
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must be longer than heartbeat_interval "
                             f"({self.heartbeat_interval}), else live trials count as killed")
        return self


class Settings(StrictModel):
    """A whole run. Field order follows the original file so the reference reads familiar."""

    experiment: Optional[str] = Field(None, description="study/run name prefix; default: settings file stem")
    variants: list[str] = Field(min_length=1)
    variant_settings: dict[str, VariantSettings] = Field(default_factory=dict)
    max_plateau_count: PositiveInt = 5
    max_train_epochs: PositiveInt = 50
    search_epochs: PositiveInt = 5
    num_initial_data_points: Union[PositiveInt, Literal["infer"]] = "infer"
    max_num_trials: PositiveInt = 20
    annotations_list: list[str] = Field(default_factory=list)
    task_lists: dict[str, list[str]] = Field(default_factory=dict)
    save_dir: str = "train"
    writer_dir: Optional[str] = Field(None, description="TensorBoard root; default <save_dir>/runs")
    dataset_dir: str = "."
    hpo_parameters: dict[str, ParamRange] = Field(default_factory=dict)
    default_class_map: list[str] = Field(default_factory=list)
    class_maps: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    data: DataSettings = Field(default_factory=DataSettings)
    lint: LintSettings = Field(default_factory=LintSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    hpo: HpoSettings = Field(default_factory=HpoSettings)

    @field_validator("default_class_map")
    @classmethod
    def _class_names(cls, value: list[str]) -> list[str]:
        return check_class_names(value, "")  # the settings error names the key

    @field_validator("class_maps")
    @classmethod
    def _other_class_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {key: check_class_names(names, key) if isinstance(names, list) and
                all(isinstance(n, str) for n in names) else names for key, names in value.items()}

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants lists a name twice: {self.variants}")
        named = [("experiment", self.experiment)] if self.experiment is not None else []
        for what, name in [*named, *((f"variants[{i}]", v) for i, v in enumerate(self.variants))]:
            try:  # these name folders, studies and files in every command, so no command may take them
                safe_component(name, what)
            except UnsafeName as err:
                raise ValueError(str(err)) from err
        for name in self.hpo_parameters:
            if name not in HYPERPARAMETERS:
                raise ValueError(f"hpo_parameters.{name}: unknown hyperparameter; "
                                 f"known: {', '.join(HYPERPARAMETERS)}")
        for name in self.hpo.log_scale:
            if name not in HYPERPARAMETERS:
                raise ValueError(f"hpo.log_scale: unknown hyperparameter {name!r}")
        for name, rng in self.hpo_parameters.items():
            log = rng.log if rng.log is not None else name in self.hpo.log_scale
            if log and rng.low <= 0:
                raise ValueError(f"hpo_parameters.{name}: log-scale range needs low > 0, got {rng.low}")
            for value in (rng.low, rng.high):
                try:
                    HyperParams.model_validate({name: int(value) if name in INTEGER_PARAMETERS else float(value)})
                except ValidationError as err:
                    reason = err.errors()[0]["msg"]
                    raise ValueError(f"hpo_parameters.{name}: {value:g} is not a valid {name} ({reason})") from err
        if len(set(self.default_class_map)) != len(self.default_class_map):
            raise ValueError("default_class_map lists a class twice")
        return self

    # variants whose file gave optimal_hpo_settings as all-false placeholders (see settings.legacy)
    _placeholder_params: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def mark_placeholder_params(self, variants: list[str]) -> None:
        self._placeholder_params = frozenset(variants)

    def has_placeholder_params(self, name: str) -> bool:
        """The file said "no parameters found yet" for this variant (every value false)."""
        return name in self._placeholder_params

    def variant(self, name: str) -> VariantSettings:
        return self.variant_settings.get(name, VariantSettings())

    def wants_hpo(self, name: str) -> bool:
        return self.variant(name).run_hpo
