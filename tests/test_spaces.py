"""Text spaces: the charset, and live reads of async vector observations (Gymnasium 1.4 bug)."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.vector import AsyncVectorEnv

from hiper_gym import spaces as hiper_spaces
from hiper_gym.spaces import text_space, to_text_charset


class CountingEnv(gym.Env):
    """Observes ``"step <n>"``; any action advances the counter."""

    def __init__(self) -> None:
        self.observation_space = text_space(16)
        self.action_space = text_space(16)
        self.count = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return "step 0", {}

    def step(self, action):
        self.count += 1
        return f"step {self.count}", 0.0, False, False, {}


@pytest.fixture
def shared_envs():
    envs = AsyncVectorEnv([CountingEnv, CountingEnv], copy=False, shared_memory=True)
    yield envs
    envs.close()


def test_async_observations_are_the_latest_step_not_the_first(shared_envs):
    shared_envs.reset(seed=0)
    observations, *_ = shared_envs.step(["a", "b"])
    assert tuple(observations) == ("step 1", "step 1")
    shared_envs.step(["a", "b"])
    assert list(observations) == ["step 2", "step 2"]  # a view of the buffer, like numpy's


def test_iterating_a_view_reads_the_buffer_once(shared_envs, monkeypatch):
    reads = []
    original = hiper_spaces._SharedTextView._decode
    monkeypatch.setattr(
        hiper_spaces._SharedTextView, "_decode", lambda view: reads.append(1) or original(view)
    )
    observations, _ = shared_envs.reset(seed=0)
    assert [text for text in observations] == ["step 0", "step 0"]
    assert len(reads) == 1


def test_characters_outside_the_charset_become_the_replacement_character():
    assert to_text_charset("tea \U0001f375 ok") == "tea \ufffd ok"
