"""Game selection: splits, task types, ALFWORLD_DATA, the skip rules and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import pytest

from hiper_gym.alfworld.data import (
    EMBEDDED_GAMES_DIR,
    TASK_TYPES,
    GameDataError,
    count_by_task_type,
    index_games,
    normalize_task_types,
    read_game,
)
from hiper_gym.alfworld.env import ALFWorldEnv


def _copy_game(source: Path, split_dir: Path, task_dir: str) -> Path:
    trial = split_dir / task_dir / "trial_0"
    trial.mkdir(parents=True)
    shutil.copy(source, trial / "game.tw-pddl")
    return trial / "game.tw-pddl"


@pytest.fixture()
def one_embedded_game() -> Path:
    return index_games(EMBEDDED_GAMES_DIR, "train", ["pick_and_place_simple"])[0]


def test_embedded_splits_have_six_and_two_games_per_task_type() -> None:
    for split, per_type in (("train", 6), ("valid_seen", 2)):
        counts = count_by_task_type(index_games(EMBEDDED_GAMES_DIR, split))
        assert counts == dict.fromkeys(TASK_TYPES.values(), per_type)


def test_make_without_arguments_plays_the_embedded_train_games(monkeypatch) -> None:
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    env = gym.make("HiPER-ALFWorld-v0")
    assert env.unwrapped.game_files == index_games(EMBEDDED_GAMES_DIR, "train")
    env.close()


@pytest.mark.parametrize("selection", [[1, 6], ["pick_and_place_simple", "pick_two_obj_and_place"]])
def test_task_types_by_id_or_name(selection: list) -> None:
    env = ALFWorldEnv(task_types=selection)
    types = {count for count, n in count_by_task_type(env.game_files).items() if n}
    assert types == {"pick_and_place_simple", "pick_two_obj_and_place"}
    assert env.num_games == 12


@pytest.mark.parametrize("bad", [[7], ["pick"], []])
def test_unknown_or_empty_task_types_raise(bad: list) -> None:
    with pytest.raises(GameDataError, match="task type"):
        normalize_task_types(bad)


def test_missing_data_dir_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(GameDataError, match="does not exist"):
        ALFWorldEnv(data_dir=tmp_path / "nowhere")


def test_missing_split_raises_naming_the_layout(tmp_path: Path) -> None:
    with pytest.raises(GameDataError, match="json_2.1.1/valid_unseen"):
        ALFWorldEnv(data_dir=tmp_path, split="valid_unseen")
    with pytest.raises(GameDataError, match="unknown ALFWorld split"):
        ALFWorldEnv(split="test")


def test_empty_selection_raises_instead_of_hanging(tmp_path: Path, one_embedded_game) -> None:
    _copy_game(one_embedded_game, tmp_path / "train", "pick_and_place_simple-A-None-B-1")
    with pytest.raises(GameDataError, match="no ALFWorld games of task types"):
        ALFWorldEnv(data_dir=tmp_path, task_types=[2])


def test_skip_rules_drop_movable_and_sliced_tasks(tmp_path: Path, one_embedded_game) -> None:
    for task_dir in (
        "pick_and_place_simple-A-None-B-1",
        "pick_and_place_simple-AppleSliced-None-B-1",
        "pick_and_place_simple-A-movable-B-1",
    ):
        _copy_game(one_embedded_game, tmp_path / "json_2.1.1" / "train", task_dir)
    games = index_games(tmp_path, "train")
    assert [game.parts[-3] for game in games] == ["pick_and_place_simple-A-None-B-1"]


def test_indexing_parses_no_game_file(tmp_path: Path) -> None:
    trial = tmp_path / "train" / "pick_and_place_simple-A-None-B-1" / "trial_0"
    trial.mkdir(parents=True)
    (trial / "game.tw-pddl").write_text("not json at all")
    env = ALFWorldEnv(data_dir=tmp_path)  # builds: only paths are listed
    with pytest.raises(GameDataError, match="cannot read"):
        env.reset(seed=0)


def test_old_format_game_gets_a_clear_error(tmp_path: Path, one_embedded_game) -> None:
    game_file = _copy_game(
        one_embedded_game, tmp_path / "train", "pick_and_place_simple-A-None-B-1"
    )
    content = json.loads(game_file.read_text())
    del content["walkthrough"]
    content["grammar"] = content["grammar"].replace("move {o} to {r}", "put {o} in/on {r}")
    game_file.write_text(json.dumps(content))
    env = ALFWorldEnv(data_dir=tmp_path)
    with pytest.raises(GameDataError, match="before Nov 2024"):
        env.reset(seed=0)


def test_unsolvable_game_is_refused(tmp_path: Path, one_embedded_game) -> None:
    game_file = _copy_game(
        one_embedded_game, tmp_path / "train", "pick_and_place_simple-A-None-B-1"
    )
    content = json.loads(game_file.read_text())
    game_file.write_text(json.dumps(content | {"solvable": False}))
    with pytest.raises(GameDataError, match="unsolvable"):
        read_game(game_file)


def test_task_type_from_traj_data_when_the_directory_does_not_say(
    tmp_path: Path, one_embedded_game
) -> None:
    game_file = _copy_game(one_embedded_game, tmp_path, "my_game")
    with pytest.raises(GameDataError, match="cannot tell the task type"):
        read_game(game_file)
    shutil.copy(one_embedded_game.with_name("traj_data.json"), game_file.parent)
    assert read_game(game_file).task_type == "pick_and_place_simple"


def test_alfworld_data_variable_selects_the_data(monkeypatch, real_data_dir: Path) -> None:
    data = real_data_dir
    monkeypatch.setenv("ALFWORLD_DATA", str(data))
    env = ALFWorldEnv(split="valid_unseen")
    assert env.num_games == 6 and all(str(data) in str(game) for game in env.game_files)
    assert ALFWorldEnv(data_dir="embedded").game_files == index_games(EMBEDDED_GAMES_DIR)


@pytest.mark.parametrize("split", ["train", "valid_seen", "valid_unseen"])
def test_real_sample_has_one_game_per_task_type_and_split(split: str, real_data_dir: Path) -> None:
    env = ALFWorldEnv(data_dir=real_data_dir, split=split)
    assert count_by_task_type(env.game_files) == dict.fromkeys(TASK_TYPES.values(), 1)


def test_real_train_games_without_traj_data_are_kept(real_data_dir: Path) -> None:
    env = ALFWorldEnv(data_dir=real_data_dir, split="train", task_types=[1])
    game = read_game(env.game_files[0])
    assert game.traj_data_path is None and game.task_type == "pick_and_place_simple"


def test_import_creates_no_alfworld_cache(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ALFWORLD_DATA"} | {"HOME": str(tmp_path)}
    code = (
        "import os, hiper_gym.alfworld.env as e; e.ALFWorldEnv().reset(seed=0); "
        "print(os.environ.get('ALFWORLD_DATA'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "None"
    assert not (tmp_path / ".cache" / "alfworld").exists()
