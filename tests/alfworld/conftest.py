"""Shared ALFWorld fixtures: envs over the embedded games, and the real sample data when present."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest

import hiper_gym  # noqa: F401  (registers HiPER-ALFWorld-v0)
from hiper_gym.alfworld.env import ALFWorldEnv

#: The real ALFWorld sample (18 games): ../shared/data/alfworld relative to the repository root.
REAL_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alfworld"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real sample's root, or skip the test when this checkout has none."""
    if not (REAL_DATA_DIR / "json_2.1.1").is_dir():
        pytest.skip(f"real ALFWorld sample not found at {REAL_DATA_DIR}")
    return REAL_DATA_DIR


@pytest.fixture(scope="module")
def embedded_env() -> Iterator[gym.Env]:
    """``gym.make("HiPER-ALFWorld-v0", expert="walkthrough")`` on the embedded train games."""
    env = gym.make("HiPER-ALFWorld-v0", expert="walkthrough")
    yield env
    env.close()


@pytest.fixture(scope="module")
def bare_env() -> Iterator[ALFWorldEnv]:
    """An unwrapped env (no TimeLimit, no checkers) on the embedded train games."""
    env = ALFWorldEnv()
    yield env
    env.close()
