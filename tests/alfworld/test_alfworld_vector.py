"""Vector envs: async make_vec returns live text observations; groups share a game."""

from __future__ import annotations

import gymnasium as gym
import pytest

from hiper_gym.alfworld.env import NOTHING_HAPPENS


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_make_vec_steps_real_text(mode: str) -> None:
    envs = gym.make_vec("HiPER-ALFWorld-v0", num_envs=2, vectorization_mode=mode)
    observations, infos = envs.reset(seed=[3, 4])
    assert all(obs.startswith("-= Welcome to TextWorld, ALFRED! =-") for obs in observations)
    first_commands = [commands[0] for commands in infos["admissible_commands"]]
    observations, rewards, terminated, truncated, infos = envs.step([first_commands[0], "dance"])
    assert observations[0] != NOTHING_HAPPENS and observations[1] == NOTHING_HAPPENS
    assert list(infos["is_action_admissible"]) == [True, False]
    assert list(rewards) == [0.0, 0.0]
    envs.close()


def test_a_group_of_copies_plays_the_same_game() -> None:
    group_size = 3
    envs = gym.make_vec("HiPER-ALFWorld-v0", num_envs=group_size, vectorization_mode="async")
    observations, infos = envs.reset(seed=[11] * group_size, options={"game": 7})
    assert len(set(infos["gamefile"])) == 1 and set(infos["game_index"]) == {7}
    assert len(set(observations)) == 1
    envs.close()
