"""Checkpoints that resume a run exactly.

A checkpoint is a directory ``checkpoints/iter_<NNNNNN>/`` with:

* ``state.pt``: model and optimizer state dicts, the RNG states (python, numpy, torch, the
  trainer's game generator), the iteration and episode counters, and the resolved config;
* ``tokenizer/``: the tokenizer (``save_pretrained``), so evaluation needs nothing else.

``checkpoints/latest`` holds the name of the newest complete checkpoint; it is written last, so
an interrupted save never becomes the one a resume picks.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
TOKENIZER_DIR = "tokenizer"
LATEST_FILE = "latest"


def rng_state(game_rng: np.random.Generator) -> dict[str, Any]:
    """The random states a resume must restore."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "game_rng": game_rng.bit_generator.state,
    }


def restore_rng_state(state: dict[str, Any], game_rng: np.random.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    game_rng.bit_generator.state = state["game_rng"]


def save_checkpoint(
    checkpoint_root: Path, iteration: int, state: dict[str, Any], tokenizer: Any
) -> Path:
    """Write ``checkpoint_root/iter_<iteration>/`` and point ``latest`` at it."""
    directory = Path(checkpoint_root) / f"iter_{iteration:06d}"
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / (STATE_FILE + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, directory / STATE_FILE)
    tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    latest = Path(checkpoint_root) / LATEST_FILE
    latest.with_suffix(".tmp").write_text(directory.name)
    os.replace(latest.with_suffix(".tmp"), latest)
    return directory


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from itself, a ``checkpoints/`` folder or a run directory.

    Raises:
        FileNotFoundError: If no complete checkpoint is found there.
    """
    path = Path(path)
    candidates = [path, path / "checkpoints"]
    for candidate in candidates:
        if (candidate / STATE_FILE).is_file():
            return candidate
        latest = candidate / LATEST_FILE
        if latest.is_file():
            directory = candidate / latest.read_text().strip()
            if (directory / STATE_FILE).is_file():
                return directory
    raise FileNotFoundError(f"no checkpoint (state.pt) found at {path} or under it")


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The resolved checkpoint directory and its state (loaded on the CPU)."""
    directory = resolve_checkpoint(path)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    return directory, state
