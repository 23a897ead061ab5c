"""Fixtures for the wrapper tests: a tiny real text env (for env-agnosticism) and ALFWorld."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from hiper_gym.spaces import text_space


class KeyDoorTextEnv(gym.Env[str, str]):
    """A three-command text game: take the key, open the door, leave through it.

    The exit direction (north or south) is drawn from the env's RNG at reset, so seeds matter.
    ``info`` carries ``admissible_commands``, ``task`` and ``won`` like the suite's text envs.
    """

    metadata = {"render_modes": []}

    def __init__(self, max_steps: int = 20) -> None:
        self.observation_space = text_space(512)
        self.action_space = text_space(512)
        self.max_steps = max_steps
        self._direction = "north"
        self._has_key = self._door_open = False
        self._steps = 0

    def _admissible(self) -> list[str]:
        commands = ["look"]
        if not self._has_key:
            commands.append("take key")
        elif not self._door_open:
            commands.append("open door")
        else:
            commands.append(f"go {self._direction}")
        return sorted(commands)

    def _info(self, won: bool = False) -> dict[str, Any]:
        return {
            "admissible_commands": self._admissible(),
            "task": f"leave the room to the {self._direction}",
            "won": won,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._direction = "north" if self.np_random.random() < 0.5 else "south"
        self._has_key = self._door_open = False
        self._steps = 0
        task = self._info()["task"]
        return f"You are in a room with a key and a door.\n\nYour task is to: {task}.", self._info()

    def step(self, action: str):
        self._steps += 1
        won = False
        if action not in self._admissible():
            obs = "Nothing happens."
        elif action == "take key":
            self._has_key, obs = True, "You take the key."
        elif action == "open door":
            self._door_open, obs = True, f"You open the door to the {self._direction}."
        elif action.startswith("go "):
            won, obs = True, "You leave the room. You won!"
        else:
            obs = "You are in a room with a door."
        truncated = not won and self._steps >= self.max_steps
        return obs, float(won), won, truncated, self._info(won)


if "KeyDoorText-v0" not in gym.registry:
    gym.register("KeyDoorText-v0", entry_point=KeyDoorTextEnv)


#: Gymnasium's checker always warns that a wrapped env differs from ``env.unwrapped``; checking
#: wrappers is our point, so that one warning is expected and every other one fails the test.
_WRAPPED_ENV_WARNING = "is different from the unwrapped version"


def check_env_without_warnings(env: gym.Env) -> None:
    """Run Gymnasium's ``check_env`` and fail on any warning but the wrapped-env notice."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if _WRAPPED_ENV_WARNING not in str(w.message)]
    assert not unexpected, unexpected


@pytest.fixture
def checked_env():
    return check_env_without_warnings


@pytest.fixture
def key_door_env() -> KeyDoorTextEnv:
    return KeyDoorTextEnv()


#: The real ALFWorld sample shared with the project, used only if the embedded games are absent.
SHARED_ALFWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alfworld"


@functools.cache
def alfworld_data_kwargs() -> dict[str, str]:
    """Keyword arguments for ALFWorld's games: none for the embedded games, else the shared
    sample; skips the test when neither exists."""
    import hiper_gym  # noqa: F401
    from hiper_gym.alfworld.data import GameDataError

    try:
        gym.make("HiPER-ALFWorld-v0").close()
        return {}
    except GameDataError:
        if not SHARED_ALFWORLD.is_dir():
            pytest.skip("no ALFWorld games: neither embedded nor in ../shared/data")
        return {"data_dir": str(SHARED_ALFWORLD)}


def make_alfworld(**kwargs: Any) -> gym.Env:
    """``gym.make("HiPER-ALFWorld-v0", **kwargs)`` on the embedded games (or the shared sample)."""
    return gym.make("HiPER-ALFWorld-v0", **alfworld_data_kwargs(), **kwargs)


@pytest.fixture
def alfworld_kwargs() -> dict[str, str]:
    return alfworld_data_kwargs()


@pytest.fixture
def alfworld():
    """A factory of ALFWorld envs, closed after the test."""
    made: list[gym.Env] = []

    def factory(**kwargs: Any) -> gym.Env:
        made.append(make_alfworld(**kwargs))
        return made[-1]

    yield factory
    for env in made:
        env.close()
