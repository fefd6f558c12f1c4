"""Final training on several processes: ``torchrun --nproc-per-node N code/torch_model_runner.py …``.

Under torchrun (``WORLD_SIZE`` > 1) the runner starts one process group (NCCL on CUDA, gloo on
CPU) and a gloo *control* group with a long timeout for Python objects and waits. Rank 0 does
everything that happens once (data split files, the search, claims, outputs, TensorBoard,
checkpoints, validation) and sends its results to the other ranks; final training runs on all
ranks with ``DistributedDataParallel`` and a ``DistributedSampler``. Outside torchrun every helper
here is a no-op, so single-process code paths stay exactly as they were.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")
#: how long the other ranks wait for rank 0 (a search may take days): $OBDB_DIST_TIMEOUT seconds
DEFAULT_WAIT = 7 * 24 * 3600


@dataclass
class DistState:
    active: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    control: Any = None  # gloo group for objects and barriers
    owns_group: bool = False


_STATE = DistState()


def requested() -> bool:
    """True when launched by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> DistState:
    """Join the process group torchrun prepared (idempotent); a no-op outside torchrun."""
    global _STATE
    if _STATE.active or not requested():
        return _STATE
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    wait = _dt.timedelta(seconds=float(os.environ.get("OBDB_DIST_TIMEOUT", DEFAULT_WAIT)))
    control = dist.new_group(backend="gloo", timeout=wait)
    _STATE = DistState(True, rank, world, local_rank, dist.get_backend(), control, owns)
    log.info("distributed: rank %d of %d (local rank %d), backend %s", rank, world, local_rank, _STATE.backend)
    return _STATE


def teardown() -> None:
    global _STATE
    if _STATE.active and _STATE.owns_group and dist.is_initialized():
        dist.destroy_process_group()  # no barrier: a rank that failed must not wait for the others
    _STATE = DistState()


def state() -> DistState:
    return _STATE


def is_active() -> bool:
    return _STATE.active


def is_main() -> bool:
    """Rank 0 under torchrun, and always true otherwise: the process that writes outputs."""
    return _STATE.rank == 0


def barrier() -> None:
    if _STATE.active:
        dist.barrier(group=_STATE.control)


def broadcast(obj: T | None = None) -> T:
    """Rank 0's ``obj`` on every rank (pickled over the gloo control group)."""
    if not _STATE.active:
        return obj  # type: ignore[return-value]
    box = [obj if _STATE.rank == 0 else None]
    # rank 0's small results go to the ranks of the same torchrun job over its own process group:
    # trusted peers started together, never a file or user input
    dist.broadcast_object_list(box, src=0, group=_STATE.control)  # noqa: TID251
    return box[0]  # type: ignore[return-value]


class RankZeroFailed(RuntimeError):
    """Raised on the other ranks when rank 0 failed in :func:`on_rank0`."""


def on_rank0(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on rank 0 only; every rank returns its result (or raises when it
    failed on rank 0, so no rank waits for a result that will never come)."""
    if not _STATE.active:
        return fn(*args, **kwargs)
    if _STATE.rank == 0:
        try:
            result = fn(*args, **kwargs)
        except BaseException as err:
            broadcast(("error", f"{type(err).__name__}: {err}"))
            raise
        broadcast(("ok", result))
        return result
    status, payload = broadcast()
    if status == "error":
        raise RankZeroFailed(f"rank 0 failed: {payload}")
    return payload


def device_for(device: torch.device) -> torch.device:
    """Each rank on its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if _STATE.active and device.type == "cuda":
        return torch.device("cuda", _STATE.local_rank)
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if not _STATE.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else _STATE.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (state dicts without ``module.``)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def sampler_for(dataset: Any, *, seed: int) -> Any:
    if not _STATE.active:
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=_STATE.world_size, rank=_STATE.rank, shuffle=True, seed=seed)
