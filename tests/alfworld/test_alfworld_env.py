"""The Gymnasium contract of HiPER-ALFWorld-v0: spaces, reset/step semantics, bad input."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from hiper_gym.alfworld.data import TASK_TYPES
from hiper_gym.alfworld.env import NOTHING_HAPPENS, ALFWorldEnv

INFO_KEYS = {
    "task",
    "task_type",
    "admissible_commands",
    "gamefile",
    "game_index",
    "won",
    "is_action_admissible",
}


def test_registered_with_a_50_step_limit() -> None:
    spec = gym.spec("HiPER-ALFWorld-v0")
    assert spec.max_episode_steps == 50
    assert spec.entry_point == "hiper_gym.alfworld.env:ALFWorldEnv"


@pytest.mark.parametrize("expert", [None, "walkthrough", "handcoded"])
def test_check_env_passes_without_warnings(expert: str | None) -> None:
    env = gym.make("HiPER-ALFWorld-v0", expert=expert).unwrapped  # with a spec: render checks run
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
    env.close()


def test_seeded_resets_are_deterministic(bare_env: ALFWorldEnv) -> None:
    def episode_start(seed: int) -> list[tuple[str, str]]:
        first = bare_env.reset(seed=seed)
        starts = [first] + [bare_env.reset() for _ in range(3)]
        return [(obs, info["gamefile"]) for obs, info in starts]

    assert episode_start(7) == episode_start(7)
    assert len({gamefile for _, gamefile in episode_start(7)}) > 1  # later resets draw on


def test_reset_draws_games_across_the_list(bare_env: ALFWorldEnv) -> None:
    bare_env.reset(seed=0)
    indices = {bare_env.reset()[1]["game_index"] for _ in range(30)}
    assert len(indices) > bare_env.num_games // 3


def test_reset_info_has_the_documented_keys(bare_env: ALFWorldEnv) -> None:
    obs, info = bare_env.reset(seed=0, options={"game": 5})
    assert set(info) == INFO_KEYS  # no expert: no expert_plan, and no facts list
    assert info["game_index"] == 5
    assert info["gamefile"] == str(bare_env.game_files[5])
    assert info["task_type"] in TASK_TYPES.values()
    assert f"Your task is to: {info['task']}." in obs
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert "help" not in info["admissible_commands"]
    assert info["admissible_commands"] == sorted(info["admissible_commands"])
    assert not info["won"]


def test_game_files_are_sorted_paths(bare_env: ALFWorldEnv) -> None:
    assert bare_env.game_files == sorted(bare_env.game_files)
    assert bare_env.num_games == len(bare_env.game_files) == 36


def test_reset_by_path_or_trial_directory(bare_env: ALFWorldEnv) -> None:
    game_file = bare_env.game_files[3]
    for game in (game_file, str(game_file.parent)):
        _, info = bare_env.reset(options={"game": game})
        assert info["gamefile"] == str(game_file)
        assert info["game_index"] == 3


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"game": 10_000}, IndexError),
        ({"game": -1}, IndexError),
        ({"game": 1.5}, TypeError),
        ({"level": 1}, ValueError),
    ],
)
def test_bad_reset_options_raise(bare_env: ALFWorldEnv, options: dict, error: type) -> None:
    with pytest.raises(error):
        bare_env.reset(options=options)


def test_winning_step_rewards_one_and_terminates(embedded_env: gym.Env) -> None:
    _, info = embedded_env.reset(seed=0, options={"game": 0})
    *leading, last = info["expert_plan"]
    for command in leading:
        _, reward, terminated, truncated, info = embedded_env.step(command)
        assert (reward, terminated, truncated, info["won"]) == (0.0, False, False, False)
        assert info["is_action_admissible"]
    _, reward, terminated, truncated, info = embedded_env.step(last)
    assert (reward, terminated, truncated, info["won"]) == (1.0, True, False, True)


def test_time_limit_truncates_and_the_engine_never_does() -> None:
    env = gym.make("HiPER-ALFWorld-v0", max_episode_steps=60)
    env.reset(seed=0)
    outcomes = [env.step("look")[2:4] for _ in range(60)]
    assert outcomes[:59] == [(False, False)] * 59  # past ALFWorld's own 50-step limit
    assert outcomes[59] == (False, True)
    env.close()


def test_step_before_reset_raises() -> None:
    env = ALFWorldEnv()
    with pytest.raises(RuntimeError, match="before reset"):
        env.step("look")


def test_step_after_a_win_raises(bare_env: ALFWorldEnv) -> None:
    bare_env.reset(options={"game": 0})
    for command in bare_env._game.walkthrough:
        *_, info = bare_env.step(command)
    assert info["won"]
    with pytest.raises(RuntimeError, match="after the episode ended"):
        bare_env.step("look")


@pytest.mark.parametrize(
    "action",
    ["", " ", "x" * 1_000_000, "go to\x00 bed 1\x1b[2J", "café 咖啡 🙂", "help", "GO TO BED 1"],
    ids=["empty", "blank", "1MB", "control", "non-ascii", "help", "wrong-case"],
)
def test_any_string_that_is_not_a_command_is_a_flagged_no_op(
    bare_env: ALFWorldEnv, action: str
) -> None:
    first_obs, first_info = bare_env.reset(options={"game": 0})
    obs, reward, terminated, truncated, info = bare_env.step(action)
    assert (obs, reward, terminated, truncated) == (NOTHING_HAPPENS, 0.0, False, False)
    assert info["is_action_admissible"] is False
    assert info["admissible_commands"] == first_info["admissible_commands"]


def test_surrounding_whitespace_is_ignored(bare_env: ALFWorldEnv) -> None:
    _, info = bare_env.reset(options={"game": 0})
    command = info["admissible_commands"][0]
    obs, *_, info = bare_env.step(f"  {command}\n")
    assert info["is_action_admissible"] and obs != NOTHING_HAPPENS


def test_non_string_action_raises_type_error(bare_env: ALFWorldEnv) -> None:
    bare_env.reset(options={"game": 0})
    with pytest.raises(TypeError, match="strings"):
        bare_env.step(3)  # type: ignore[arg-type]


def test_spaces_accept_sentences_and_non_ascii(bare_env: ALFWorldEnv) -> None:
    obs, _ = bare_env.reset(options={"game": 0})
    assert bare_env.observation_space.contains(obs)
    assert bare_env.action_space.contains("take the café mug 1 from countertop 1 — ok?")


def test_repeated_reset_reuses_the_loaded_game(bare_env: ALFWorldEnv) -> None:
    bare_env.reset(options={"game": 1})
    engine = bare_env._engine
    bare_env.reset(options={"game": 1})
    assert bare_env._engine is engine


def test_cache_keeps_at_most_cache_size_games() -> None:
    env = ALFWorldEnv(cache_size=2)
    for index in range(4):
        env.reset(options={"game": index})
    assert len(env._cache) == 2
    obs, info = env.reset(options={"game": 0})  # evicted, loaded again into a reused engine
    assert info["gamefile"] == str(env.game_files[0]) and "Your task is to" in obs
    env.close()


def test_render_modes() -> None:
    env = ALFWorldEnv(render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert env.render() == obs
    with pytest.raises(ValueError, match="render_mode"):
        ALFWorldEnv(render_mode="rgb_array")


def test_pickled_env_is_rebuilt_from_its_arguments() -> None:
    env = ALFWorldEnv(split="valid_seen", task_types=[2], expert="walkthrough")
    clone = pickle.loads(pickle.dumps(env))
    assert clone.game_files == env.game_files and clone.expert == "walkthrough"
    _, info = clone.reset(seed=0)
    assert info["task_type"] == "look_at_obj_in_light"


def test_engine_matches_textworlds_pddl_env_step_for_step(bare_env: ALFWorldEnv) -> None:
    """The snapshot reset and shared grammar change nothing the stock engine would show."""
    import random

    from hiper_gym.alfworld.data import read_game
    from hiper_gym.alfworld.engine import AlfredDemangler, PddlEnv, SnapshotPddlEnv, textworld

    def trace(engine_class: type, content: dict) -> list:
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True)
        engine = AlfredDemangler(engine_class(infos), shuffle=False)
        engine.load(content)
        rng, states = random.Random(0), []
        for _ in range(2):  # the second episode starts from a reset after play
            state = engine.reset()
            for _ in range(8):
                states.append((state["feedback"], state["admissible_commands"], state["won"]))
                states.append(sorted(map(str, state["facts"])))
                state, _, _ = engine.step(rng.choice(state["admissible_commands"]))
        return states

    for game_file in bare_env.game_files[::9]:
        content = read_game(game_file).content
        assert trace(SnapshotPddlEnv, content) == trace(PddlEnv, content), game_file
