"""Training checkpoints: written atomically, refused when they belong to another problem.

A checkpoint is one ``checkpoint.npz`` in its directory, holding theta, the
iteration, the loss history, the solver's state (momentum, Adam moments, the
shuffling RNG) and a JSON *fingerprint* of the problem: the data's shape,
dtypes and a hash of rows spread over it, the number of classes and the
options that change the trajectory (solver, lr, l2, batch size, seed...).
It is written under a temporary name, fsynced and moved into place with
``os.replace``, so a process killed at any moment leaves either the previous
checkpoint or the new one, never a torn file. No pickle is involved.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastsoftmax._io import atomic_file

_FORMAT = "fastsoftmax-checkpoint"
_FORMAT_VERSION = 1
FILENAME = "checkpoint.npz"


class CheckpointError(ValueError):
    """The checkpoint is unreadable or belongs to a different problem; nothing was overwritten."""


@dataclass
class CheckpointState:
    """What a checkpoint holds."""

    theta: np.ndarray
    iteration: int
    loss_history: list[float]
    fingerprint: dict[str, Any]
    solver_state: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    converged: bool = False


def _canonical(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, sort_keys=True, default=str)


def checkpoint_path(directory: str | os.PathLike) -> str:
    return os.path.join(os.fspath(directory), FILENAME)


def save(directory: str | os.PathLike, state: CheckpointState) -> None:
    """Write ``state`` to ``directory/checkpoint.npz`` atomically (temp file, fsync, os.replace)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    arrays = {f"state_{k}": np.asarray(v) for k, v in state.solver_state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.solver_state.items() if not isinstance(v, np.ndarray)}
    meta = {
        "iteration": int(state.iteration),
        "loss_history": [float(x) for x in state.loss_history],
        "solver_state": scalars,
        "finished": bool(state.finished),
        "converged": bool(state.converged),
    }
    with atomic_file(checkpoint_path(directory)) as f:
        np.savez(
            f,
            format=np.array(_FORMAT),
            format_version=np.array(_FORMAT_VERSION),
            fingerprint=np.array(_canonical(state.fingerprint)),
            meta=np.array(json.dumps(meta)),
            theta=state.theta,
            **arrays,
        )


def load(directory: str | os.PathLike, fingerprint: dict[str, Any]) -> CheckpointState | None:
    """Read the checkpoint in ``directory``; None if there is none.

    Raises
    ------
    CheckpointError
        The file is corrupt, or its fingerprint differs from ``fingerprint``
        (the message names the fields that differ).
    """
    path = checkpoint_path(directory)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        if str(arrays["format"]) != _FORMAT or int(arrays["format_version"]) != _FORMAT_VERSION:
            raise KeyError("format marker")
        stored = json.loads(str(arrays["fingerprint"]))
        meta = json.loads(str(arrays["meta"]))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path} is not a readable fastsoftmax checkpoint ({type(exc).__name__}: {exc}); "
            f"delete it or use another --checkpoint directory."
        ) from exc
    expected = json.loads(_canonical(fingerprint))
    if stored != expected:
        keys = sorted(set(stored) | set(expected))
        diff = [f"{k}: checkpoint {stored.get(k)!r}, now {expected.get(k)!r}" for k in keys if stored.get(k) != expected.get(k)]
        raise CheckpointError(
            f"the checkpoint in {os.fspath(directory)} belongs to a different problem ("
            + "; ".join(diff)
            + "); use another checkpoint directory or delete it to start over."
        )
    solver_state = dict(meta["solver_state"])
    solver_state.update({k[len("state_"):]: v for k, v in arrays.items() if k.startswith("state_")})
    return CheckpointState(
        theta=arrays["theta"],
        iteration=int(meta["iteration"]),
        loss_history=list(meta["loss_history"]),
        fingerprint=stored,
        solver_state=solver_state,
        finished=bool(meta["finished"]),
        converged=bool(meta["converged"]),
    )
