"""The runner: settings → data (:mod:`obdb.prepare`: load, lint, class map, split) → per variant
(search →) final training → outputs.

Stages are called in order from :func:`run` and never call each other sideways. Everything that
can be checked without training (variant names, parameters, writable volume, data, split) is
checked first, so a bad run fails in seconds with nothing written.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from .fileio import read_json, remove_stale_temps, write_json
from .hpo import (build_pruner, build_sampler, n_startup_trials, open_storage, redact, run_search, storage_url,
                  study_name)
from .hpo.coordination import FinalClaim, claim_final, runner_lock
from .hpo.storage import StorageUnavailable, check_reachable, is_shared
from .hpo.warmstart import WarmStart, WarmStartError, check_entries, previous_search
from .hpo.warmstart import resolve as resolve_warm_starts
from .models import ModelError, ModelSpec, prepare_weights, read_header, resolve_variant, save_model, variant_version
from .outputs import RunPaths, attach_log_file, check_writable, now, write_manifest, write_summary
from .paths import UnsafeName, safe_component
from .prepare import Prepared, RunError, prepare
from .records import stable_hash
from .settings import HyperParams, Settings
from .training import TrainingDiverged, distributed
from .training.config import fit_config, fit_data, model_spec, weights_dir
from .training.fit import EarlySubset, FitConfig, FitData, fit

log = logging.getLogger(__name__)


# --- stage 0: checks that need no data ---------------------------------------------------------
def run_paths(settings: Settings) -> RunPaths:
    save_dir = Path(settings.save_dir)
    writer_dir = Path(settings.writer_dir) if settings.writer_dir else save_dir / "runs"
    return RunPaths(save_dir=save_dir, writer_dir=writer_dir, experiment=settings.experiment or "obdb")


def settings_hash(settings: Settings) -> str:
    return stable_hash(settings.model_dump(mode="json"))


def check_run(settings: Settings, variants: Sequence[str]) -> None:
    """Everything about the settings that the schema alone cannot know."""
    problems = []
    # variant names and an explicit experiment are checked by the settings schema; the default
    # experiment (the settings file's stem) is only known here. Refused, not renamed: it is the
    # user's own and names folders, studies and files.
    try:
        safe_component(run_paths(settings).experiment, "experiment")
    except UnsafeName as err:
        problems.append(str(err))
    for index, variant in enumerate(variants):
        block = settings.variant(variant)
        try:
            resolve_variant(variant, backbone=block.backbone, head=block.head)
            check_pretrained_for(settings, variant)  # coco without a COCO detector, a missing file
        except ModelError as err:
            problems.append(f"variants[{index}] ({variant}): {err}")
        if block.run_hpo and not settings.hpo_parameters:
            problems.append(f"{variant}.run_hpo is 1 but hpo_parameters (or sherpa_parameters) is empty")
        if not block.run_hpo and block.optimal_hpo_settings is None and settings.has_placeholder_params(variant) \
                and (block.use_settings_file or not run_paths(settings).best_params_file(variant).exists()):
            problems.append(f"{variant}.run_hpo is 0 but its optimal_hpo_settings are all false (\"not found yet\"): "
                            "give the parameters, or set run_hpo: 1 to search them")
        if block.pretrained_model_path and not Path(block.pretrained_model_path).is_file():
            problems.append(f"{variant}.pretrained_model_path: file not found: {block.pretrained_model_path}")
        elif block.pretrained_model_path:
            from .models.weights import extract_state_dict, load_weights_file

            try:  # a pickle or a damaged file is refused now, before anything is written
                extract_state_dict(load_weights_file(block.pretrained_model_path), block.pretrained_model_path)
            except ModelError as err:
                problems.append(f"{variant}.pretrained_model_path: {err}")
    if settings.train.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"train.device is {settings.train.device!r} but no CUDA device is available "
                        "(use \"auto\" to train on the CPU when there is none)")
    if problems:
        raise RunError("settings cannot run:\n" + "\n".join(f"  {p}" for p in problems))


def check_pretrained_for(settings: Settings, variant: str) -> None:
    """``model.pretrained`` fits this variant (without looking for or downloading any file)."""
    from .models import check_pretrained
    from .models.hub import coco_model_name

    pretrained = check_pretrained(settings.model.pretrained)
    if pretrained == "coco":
        spec = model_spec(settings, variant, 2)
        coco_model_name(spec.backbone, spec.head, variant_version(variant))


def fetch_pretrained(settings: Settings, variants: Sequence[str], progress: bool = True) -> None:
    """Every weights file the run will need, local or downloaded now: a file that cannot be had
    stops the run (exit 2) before anything is written, not hours later at the final training."""
    for variant in variants:
        prepare_weights(model_spec(settings, variant, 2), settings.model.pretrained, weights_dir=weights_dir(settings),
                        version=variant_version(variant), progress=progress)
    tsne = settings.split.tsne
    if settings.split.method == "tsne" and tsne.features == "backbone" and settings.model.pretrained != "none":
        from .models import imagenet_weights

        imagenet_weights(tsne.backbone, weights_dir(settings), progress=progress)


def check_outputs_readable(paths: RunPaths, variants: Sequence[str]) -> None:
    """A damaged ``best.pt`` left from an earlier run is found now, not after a search, when the
    final training would read it (writes are atomic, so damage came from outside). A damaged
    ``last.pt`` is reported by the resume itself, before any epoch is trained."""
    from .training.trainer import CheckpointError

    for variant in variants:
        best = paths.checkpoint_dir(variant) / "best.pt"
        if not best.exists():
            continue
        try:
            weights = torch.load(best, map_location="cpu", weights_only=True)
            ok = isinstance(weights, dict) and all(isinstance(v, torch.Tensor) for v in weights.values())
        except Exception as err:  # truncated zip, not a torch file, pickled code refused, ...
            raise CheckpointError(f"checkpoint {best} cannot be read ({type(err).__name__}: "
                                  f"{' '.join(str(err).split())[:200]}); move it away and rerun") from err
        if not ok:
            raise CheckpointError(f"checkpoint {best} holds no model weights; move it away and rerun")


def check_warm_start_sources(settings: Settings, variants: Sequence[str], url: str) -> None:
    """``hpo.warm_start_from`` is checked before ``optuna.db`` or a split file is written."""
    if settings.hpo.warm_start_from and any(settings.wants_hpo(v) for v in variants):
        try:
            check_entries(settings.hpo.warm_start_from, url)
        except WarmStartError as err:
            raise RunError(str(err)) from err


def hold_studies(settings: Settings, variants: Sequence[str], paths: RunPaths, url: str) -> contextlib.ExitStack:
    """On SQLite, one runner per study: lock each variant's study (search and final training)
    for this run; a second runner stops with a message naming the holder. Shared storage keeps
    its own coordination (database locks and the final-training claim)."""
    stack = contextlib.ExitStack()
    if is_shared(url) or not distributed.is_main():
        return stack
    db = Path(url.removeprefix("sqlite:///"))
    try:
        for variant in variants:
            stack.enter_context(runner_lock(db, study_name(paths.experiment, variant)))
    except BaseException:
        stack.close()
        raise
    return stack


# --- stage 1: data -------------------------------------------------------------------------------
def prepare_data(settings: Settings, paths: RunPaths, progress: bool = True) -> Prepared:
    """The runner's data: :func:`obdb.prepare.prepare` with its reports under ``save_dir`` and at
    least one box to train on."""
    return prepare(settings, save_dir=paths.save_dir, progress=progress, require_boxes=True)


# --- stage 2: per variant ------------------------------------------------------------------------
def fixed_params(settings: Settings, variant: str, paths: RunPaths) -> tuple[HyperParams, dict[str, Any]]:
    """Parameters for a variant that does not search: the file's ``optimal_hpo_settings``, or with
    ``use_settings_file: 0`` the best parameters an earlier search saved for it."""
    block = settings.variant(variant)
    saved = paths.best_params_file(variant)
    if not block.use_settings_file and saved.exists():
        data = read_json(saved)
        return HyperParams.model_validate(data["params"]), {"source": str(saved), **{
            k: data.get(k) for k in ("best_value", "trial_number", "study_name")}}
    if block.optimal_hpo_settings is not None:
        return block.optimal_hpo_settings, {"source": "settings: optimal_hpo_settings"}
    log.warning("%s: no optimal_hpo_settings and no earlier search; using default hyperparameters", variant)
    return HyperParams(), {"source": "defaults"}


def search(settings: Settings, variant: str, data: FitData, config: FitConfig,
           paths: RunPaths) -> tuple[HyperParams, dict[str, Any]]:
    block = settings.variant(variant)
    url = storage_url(settings.hpo.storage, paths.save_dir)
    log.info("%s: search in study %s at %s", variant, study_name(paths.experiment, variant), redact(url))
    space = settings.hpo_parameters
    startup = n_startup_trials(settings.num_initial_data_points, len(space), settings.max_num_trials)
    base = block.optimal_hpo_settings or HyperParams()
    storage = open_storage(url, **heartbeats(settings))
    hpo = settings.hpo
    early = EarlySubset(hpo.low_fidelity_epochs, hpo.low_fidelity_fraction) if hpo.low_fidelity_epochs else None

    def objective(params: HyperParams, number: int, hooks: Sequence[Any]) -> float:
        _, state, _ = fit(data, config, params, max_epochs=settings.search_epochs, name=f"{variant} trial {number}",
                          log_dir=paths.tensorboard_dir(variant, f"trial-{number:03d}"), extra_hooks=hooks,
                          seed_offset=number, early_subset=early)
        return state.best_score

    result = run_search(objective, name=study_name(paths.experiment, variant), storage=storage,
                        sampler=build_sampler(hpo.sampler, n_startup_trials=startup, seed=settings.seed),
                        pruner=build_pruner(hpo.pruner, warmup_epochs=hpo.pruner_warmup_epochs,
                                            max_epochs=settings.search_epochs,
                                            startup_trials=hpo.pruner_startup_trials),
                        space=space, log_scale=hpo.log_scale, base=base,
                        warm_start=warm_starts(settings, variant, paths, storage, base),
                        max_trials=settings.max_num_trials, timeout=settings.hpo.timeout,
                        recover_stale=url.startswith("sqlite:"), metric=settings.hpo.metric)
    info = {"source": "search", **result.to_json()}
    write_json(paths.best_params_file(variant), {"variant": variant, "metric": settings.hpo.metric, **info})
    return result.params, info


def warm_starts(settings: Settings, variant: str, paths: RunPaths, storage: Any, base: HyperParams) -> list[WarmStart]:
    """What a new study tries first: ``optimal_hpo_settings``, the best parameters of an earlier
    search of this variant in ``save_dir``, then ``hpo.warm_start_from`` (run_search skips duplicates
    and queues nothing when the study already has trials)."""
    block = settings.variant(variant)
    points = [WarmStart(block.optimal_hpo_settings, "optimal_hpo_settings")] if block.optimal_hpo_settings else []
    previous = previous_search(paths.best_params_file(variant))
    if previous is not None:
        points.append(previous)
    try:
        points.extend(resolve_warm_starts(settings.hpo.warm_start_from, storage, base))
    except WarmStartError as err:
        raise RunError(str(err)) from err
    return points


def heartbeats(settings: Settings) -> dict[str, Any]:
    hpo = settings.hpo
    return {"heartbeat_interval": hpo.heartbeat_interval, "grace_period": hpo.grace_period,
            "max_retry": hpo.max_retry}


def claim_final_training(settings: Settings, variant: str, paths: RunPaths) -> FinalClaim:
    """With a shared study database, one worker trains each variant's final model and the others
    skip it; under torchrun rank 0 claims for all ranks. A SQLite run always holds the claim."""
    url = storage_url(settings.hpo.storage, paths.save_dir)

    def claim() -> FinalClaim:
        return claim_final(open_storage(url, **heartbeats(settings)) if is_shared(url) else None,
                           study_name(paths.experiment, variant))

    if not distributed.is_active():
        return claim()
    mine = claim() if distributed.is_main() else FinalClaim(None, variant)
    mine.held = distributed.broadcast(mine.held)
    return mine


def prepare_final_checkpoints(folder: Path, params: HyperParams, max_epochs: int) -> None:
    """A checkpoint from other parameters must not be resumed: keep it aside and start over."""
    marker = folder / "params.json"
    wanted = {"params": params.model_dump(), "max_epochs": max_epochs}
    if marker.exists() and read_json(marker) != wanted:
        for name in ("last.pt", "best.pt"):
            old = folder / name
            if old.exists():
                old.replace(folder / f"{name}.stale")
        log.warning("%s: parameters changed since the last run; final training starts over", folder)
    write_json(marker, wanted)


def train_variant(settings: Settings, variant: str, prepared: Prepared, paths: RunPaths,
                  progress: bool = True) -> dict[str, Any]:
    assert prepared.split is not None and prepared.split_file is not None  # prepare_data always splits
    spec = model_spec(settings, variant, prepared.class_map.num_classes)
    config = fit_config(settings, variant, spec, progress)
    data = fit_data(settings, prepared.train, prepared.val, prepared.class_map, progress)
    searched = settings.wants_hpo(variant)
    if searched:  # the search writes best_params.json itself: its result stands even if final training fails
        params, info = distributed.on_rank0(search, settings, variant, data, config, paths)
    else:
        params, info = fixed_params(settings, variant, paths)
    with claim_final_training(settings, variant, paths) as claim:  # released however training ends
        if not claim.held:
            return _summary_row(variant, spec, info, {}, paths)
        return _final_training(settings, variant, prepared, paths, data, config, spec, params, info, searched)


def _final_training(settings: Settings, variant: str, prepared: Prepared, paths: RunPaths, data: FitData,
                    config: FitConfig, spec: ModelSpec, params: HyperParams, info: dict[str, Any],
                    searched: bool) -> dict[str, Any]:
    out = paths.variant_dir(variant)
    metrics_file = paths.metrics_file(variant)
    done = read_json(metrics_file) if metrics_file.exists() else {}
    if (done.get("status") == "complete" and done.get("params") == params.model_dump()
            and done.get("split_hash") == prepared.split.hash and paths.model_file(variant).exists()):
        if not (out / "manifest.json").exists():  # killed between metrics.json and manifest.json (older runs)
            log.warning("%s: manifest.json is missing (interrupted run); writing it now", variant)
            saved_spec = read_header(paths.model_file(variant))["spec"]  # what the model was trained as
            _write_variant_manifest(settings, variant, prepared, paths, saved_spec, params, info)
        log.info("%s: final model already trained with these parameters (%s); skipping", variant,
                 paths.model_file(variant))
        return _summary_row(variant, spec, info, done, paths)
    checkpoints = paths.checkpoint_dir(variant)
    distributed.on_rank0(prepare_final_checkpoints, checkpoints, params, settings.max_train_epochs)
    started = now()
    try:
        model, state, spec = fit(data, replace(config, distributed=distributed.is_active()), params,
                                 max_epochs=settings.max_train_epochs, name=f"{variant} final",
                                 patience=settings.max_plateau_count, checkpoint_dir=checkpoints,
                                 log_dir=paths.tensorboard_dir(variant, "final"))
    except TrainingDiverged as err:
        fix = ("the search's best trial: lower the upper bound of hpo_parameters.lr" if searched
               else f"{variant}.optimal_hpo_settings: lower its lr")
        raise TrainingDiverged(f"{err}; lr {params.lr:g} came from {fix} (or raise train.warmup_iters) and rerun; "
                               f"variants already finished are kept") from err
    if not distributed.is_main():
        return _summary_row(variant, spec, info, {}, paths)  # rank 0 writes the outputs
    best = next((h for h in state.history if h.get("epoch") == state.best_epoch), {})
    final_metrics = {k.removeprefix("val/"): v for k, v in best.items() if k.startswith("val/")}
    header = {"variant": variant, "experiment": paths.experiment, "params": params.model_dump(),
              "split_hash": prepared.split.hash, "split_file": str(prepared.split_file.relative_to(paths.save_dir)),
              "settings_hash": settings_hash(settings), "metric": settings.hpo.metric,
              "best_epoch": state.best_epoch, "val": final_metrics}
    save_model(paths.model_file(variant), model.cpu(), spec, prepared.class_map, extra=header)
    # written with the model, not before training, so a failed run never leaves them out of step with model.pt
    write_json(out / "class_map.json", prepared.class_map.to_json())
    if not searched:
        write_json(paths.best_params_file(variant), {"variant": variant, "params": params.model_dump(),
                                                     "best_value": None, "trial_number": None, **info})
    result = {"status": "complete", "variant": variant, "metric": settings.hpo.metric,
              "best_score": state.best_score, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
              "val": final_metrics, "params": params.model_dump(), "split_hash": prepared.split.hash,
              "history": state.history, "started": started, "finished": now()}
    _write_variant_manifest(settings, variant, prepared, paths, spec.to_json(), params, info)
    write_json(metrics_file, result)  # last: "complete" in metrics.json commits model, manifest and all
    return _summary_row(variant, spec, info, result, paths)


def _write_variant_manifest(settings: Settings, variant: str, prepared: Prepared, paths: RunPaths,
                            spec: dict[str, Any], params: HyperParams, info: dict[str, Any]) -> None:
    write_manifest(paths.variant_dir(variant) / "manifest.json", variant=variant, experiment=paths.experiment,
                   model_spec=spec, settings_hash=settings_hash(settings), split_hash=prepared.split.hash,
                   split_file=str(prepared.split_file), class_map=list(prepared.class_map.names),
                   params=params.model_dump(), params_info=info,
                   data={"train_images": len(prepared.train), "val_images": len(prepared.val),
                         "skipped_images": len(prepared.annotations.skipped),
                         "dropped_boxes": prepared.annotations.dropped_boxes})


def _summary_row(variant: str, spec: ModelSpec, info: dict[str, Any], result: dict[str, Any],
                 paths: RunPaths) -> dict[str, Any]:
    trials = info.get("trials")
    return {"variant": variant, "backbone": spec.backbone, "head": spec.head,
            "hpo": "search" if info.get("source") == "search" else "fixed",
            "trials": f"{trials['complete']}+{trials['pruned']}p" if trials else None,
            "search_best": info.get("best_value"), "map": result.get("val", {}).get("map"),
            "map50": result.get("val", {}).get("map50"), "epochs": result.get("epochs_run"),
            "model": str(paths.model_file(variant))}


# --- the run -------------------------------------------------------------------------------------
def run(settings: Settings, *, variants: Sequence[str] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    chosen = list(variants or settings.variants)
    unknown = [v for v in chosen if v not in settings.variants]
    if unknown:
        raise RunError(f"--variants names {unknown} that are not in the settings' variants {settings.variants}")
    check_run(settings, chosen)
    fetch_pretrained(settings, chosen, progress)
    paths = run_paths(settings)
    url = storage_url(settings.hpo.storage, paths.save_dir)
    try:
        check_reachable(url)
    except StorageUnavailable as err:
        raise RunError(str(err)) from err
    check_warm_start_sources(settings, chosen, url)
    check_outputs_readable(paths, chosen)
    check_writable(paths.save_dir)
    distributed.setup()  # under torchrun: join the process group (no-op otherwise)
    try:
        studies = hold_studies(settings, chosen, paths, url)
    except BaseException:
        distributed.teardown()
        raise
    # our temp files (only: see fileio.TEMP_NAME) that a killed earlier run left; a write in progress holds a
    # lock on its file, but with workers on other hosts (a shared study) a lock may not reach across, so only
    # old ones go then
    remove_stale_temps(paths.save_dir, min_age_s=600.0 if is_shared(url) else 2.0)
    handler = attach_log_file(paths.save_dir, paths.experiment + ("" if distributed.is_main() else
                                                                   f"-rank{distributed.state().rank}"))
    log.info("log file: %s", handler.baseFilename)
    try:
        torch.manual_seed(settings.seed)
        prepared = distributed.on_rank0(prepare_data, settings, paths, progress)
        rows = []
        for variant in chosen:
            log.info("=== variant %s ===", variant)
            rows.append(train_variant(settings, variant, prepared, paths, progress))
        if not distributed.is_main():
            return rows
        table = write_summary(paths.save_dir, rows)
        print("\n" + table + "\n", flush=True)
        return rows
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        studies.close()
        distributed.teardown()
