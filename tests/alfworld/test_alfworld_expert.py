"""info["expert_plan"]: the walkthrough wins every game, the handcoded expert takes over after."""

from __future__ import annotations

import random
from pathlib import Path

import gymnasium as gym
import pytest

from hiper_gym.alfworld.data import EMBEDDED_GAMES_DIR, TASK_TYPES, GameDataError, index_games
from hiper_gym.alfworld.env import ALFWorldEnv


def _follow_plan(env: gym.Env, game: int) -> tuple[bool, int, str]:
    """Play the expert's next command until the episode ends; (won, steps, task_type)."""
    _, info = env.reset(seed=0, options={"game": game})
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        assert info["expert_plan"], f"empty plan on {info['gamefile']} after {steps} steps"
        _, _, terminated, truncated, info = env.step(info["expert_plan"][0])
        steps += 1
    return info["won"], steps, info["task_type"]


@pytest.mark.parametrize("split", ["train", "valid_seen"])
def test_walkthrough_wins_every_embedded_game(split: str) -> None:
    env = gym.make("HiPER-ALFWorld-v0", split=split, expert="walkthrough", cache_size=1)
    results = [_follow_plan(env, game) for game in range(env.unwrapped.num_games)]
    assert all(won for won, _, _ in results)
    assert all(3 <= steps <= 12 for _, steps, _ in results)
    per_type = {
        task_type: sum(t == task_type for *_, t in results) for task_type in TASK_TYPES.values()
    }
    assert per_type == dict.fromkeys(TASK_TYPES.values(), 6 if split == "train" else 2)
    env.close()


@pytest.mark.parametrize("split", ["train", "valid_seen", "valid_unseen"])
def test_walkthrough_wins_every_real_game(split: str, real_data_dir: Path) -> None:
    env = gym.make(
        "HiPER-ALFWorld-v0", data_dir=real_data_dir, split=split, expert="walkthrough", cache_size=1
    )
    results = [_follow_plan(env, game) for game in range(env.unwrapped.num_games)]
    assert [won for won, _, _ in results] == [True] * 6
    assert sorted(task_type for *_, task_type in results) == sorted(TASK_TYPES.values())
    env.close()


def test_plan_shrinks_as_the_walkthrough_is_followed(embedded_env: gym.Env) -> None:
    _, info = embedded_env.reset(seed=0, options={"game": 12})
    plan = info["expert_plan"]
    _, *_, info = embedded_env.step(plan[0])
    assert info["expert_plan"] == plan[1:]
    _, *_, info = embedded_env.step("dance")  # a no-op is no deviation
    assert info["expert_plan"] == plan[1:]


def test_handcoded_expert_takes_over_after_a_deviation(embedded_env: gym.Env) -> None:
    _, info = embedded_env.reset(seed=0, options={"game": 12})
    detour = next(c for c in info["admissible_commands"] if c != info["expert_plan"][0])
    _, *_, info = embedded_env.step(detour)
    assert len(info["expert_plan"]) == 1
    assert info["expert_plan"][0] in info["admissible_commands"]


def test_without_traj_data_the_plan_is_empty_after_a_deviation(real_data_dir: Path) -> None:
    env = ALFWorldEnv(data_dir=real_data_dir, split="train", task_types=[1], expert="walkthrough")
    _, info = env.reset(seed=0)
    assert info["expert_plan"]  # the stored walkthrough needs no traj_data.json
    detour = next(c for c in info["admissible_commands"] if c != info["expert_plan"][0])
    _, *_, info = env.step(detour)
    assert info["expert_plan"] == []


def test_handcoded_mode_starts_with_look_and_needs_traj_data(real_data_dir: Path) -> None:
    env = ALFWorldEnv(expert="handcoded")
    _, info = env.reset(seed=0)
    assert info["expert_plan"] == ["look"]
    real_train = ALFWorldEnv(data_dir=real_data_dir, split="train", expert="handcoded")
    with pytest.raises(GameDataError, match="traj_data.json"):
        real_train.reset(seed=0)


@pytest.mark.parametrize("task_type", [1, 2, 3, 4, 5])
def test_handcoded_expert_wins_embedded_games(task_type: int) -> None:
    env = gym.make("HiPER-ALFWorld-v0", task_types=[task_type], expert="handcoded")
    assert all(_follow_plan(env, game)[0] for game in range(env.unwrapped.num_games))
    env.close()


def test_handcoded_expert_is_seeded_and_leaves_global_random_alone() -> None:
    env = gym.make("HiPER-ALFWorld-v0", task_types=[6], expert="handcoded")

    def episode(seed: int) -> list[str]:
        _, info = env.reset(seed=seed, options={"game": 0})
        commands = []
        for _ in range(15):
            command = info["expert_plan"][0] if info["expert_plan"] else "look"
            commands.append(command)
            *_, terminated, _, info = env.step(command)
            if terminated:
                break
        return commands

    random.seed(123)
    before = random.getstate()
    assert episode(5) == episode(5)
    assert random.getstate() == before
    env.close()


def test_no_expert_no_plan_key() -> None:
    _, info = ALFWorldEnv().reset(seed=0)
    assert "expert_plan" not in info


def test_unknown_expert_raises() -> None:
    with pytest.raises(ValueError, match="unknown expert"):
        ALFWorldEnv(expert="oracle")


def test_walkthrough_is_stored_in_every_embedded_game() -> None:
    import json

    for game_file in index_games(EMBEDDED_GAMES_DIR) + index_games(
        EMBEDDED_GAMES_DIR, "valid_seen"
    ):
        assert json.loads(game_file.read_text())["walkthrough"]
