"""The embedded games: reproducible from the generator, small, solvable, in the current format."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hiper_gym.alfworld.data import EMBEDDED_GAMES_DIR, TASK_TYPES, index_games, read_game
from hiper_gym.alfworld.generator import (
    RECEPTACLE_COUNT,
    ROOMS,
    draw_scene,
    problem_pddl,
    solve,
)

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = index_games(EMBEDDED_GAMES_DIR, "train") + index_games(EMBEDDED_GAMES_DIR, "valid_seen")


def _check(*task_type_args: str, out: Path = EMBEDDED_GAMES_DIR) -> subprocess.CompletedProcess:
    script = ROOT / "scripts" / "generate_alfworld_games.py"
    command = [sys.executable, str(script), "--check", "--out", str(out), *task_type_args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_generator_script_reproduces_shipped_games_byte_for_byte() -> None:
    # Each task type has its own seeded generator, so one type reproduces alone (a full
    # `--check` takes ~20 s on an idle core).
    result = _check("--task-type", "look_at_obj_in_light")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches" in result.stdout


def test_generator_check_catches_an_edited_game(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "games"
    shutil.copytree(EMBEDDED_GAMES_DIR, copy)
    edited = next(copy.glob("valid_seen/look_at_obj_in_light-*/trial_0/game.tw-pddl"))
    edited.write_text(edited.read_text().replace("desklamp", "floorlamp"))
    result = _check("--task-type", "look_at_obj_in_light", out=copy)
    assert result.returncode == 1 and "DIFFERS" in result.stdout


def test_each_game_ships_only_the_game_and_its_task_parameters() -> None:
    for game_file in EMBEDDED:
        assert sorted(p.name for p in game_file.parent.iterdir()) == [
            "game.tw-pddl",
            "traj_data.json",
        ]
        traj = json.loads(game_file.with_name("traj_data.json").read_text())
        assert traj["task_type"] == read_game(game_file).task_type
        assert set(traj["pddl_params"]) >= {"object_target", "parent_target", "toggle_target"}


def test_games_are_current_format_with_move_actions() -> None:
    for game_file in EMBEDDED:
        content = json.loads(game_file.read_text())
        assert content["solvable"] is True
        assert content["walkthrough"] and 3 <= len(content["walkthrough"]) <= 12
        assert any(command.startswith("move ") for command in content["walkthrough"]) or (
            "look_at_obj_in_light" in str(game_file)
        )


def test_rooms_are_small_and_varied() -> None:
    rooms = set()
    for game_file in EMBEDDED:
        problem = json.loads(game_file.read_text())["pddl_problem"]
        declared = re.findall(r"^\s+\w+ - receptacle$", problem, flags=re.MULTILINE)
        assert len(declared) in RECEPTACLE_COUNT, game_file
        assert len(problem) < 8000  # the scene itself is a few KB
        rooms.add(game_file.parts[-3].rsplit("-", 1)[1].split("_")[0])
    assert rooms == {room.name for room in ROOMS}


def test_task_sentences_name_the_target_object() -> None:
    for game_file in EMBEDDED:
        content = json.loads(game_file.read_text())
        target = json.loads(game_file.with_name("traj_data.json").read_text())["pddl_params"]
        assert f"{target['object_target'].lower()}" in content["grammar"]


def test_no_two_games_share_a_scene() -> None:
    scenes = [json.loads(g.read_text())["pddl_problem"].split("\n", 1)[1] for g in EMBEDDED]
    assert len(set(scenes)) == len(scenes)


@pytest.mark.parametrize("task_type", sorted(TASK_TYPES.values()))
def test_drawn_scenes_are_solved_by_the_planner(task_type: str) -> None:
    from hiper_gym.alfworld.engine import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    scene = draw_scene(random.Random(99), task_type)
    game = {
        "pddl_domain": Path(ALFRED_PDDL_PATH).read_text(),
        "grammar": Path(ALFRED_TWL2_PATH).read_text().replace("UNKNOWN GOAL", "do it"),
        "pddl_problem": problem_pddl(scene, "test"),
    }
    plan = solve(game)
    assert plan, f"unsolvable {task_type} scene"
