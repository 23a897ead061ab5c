"""``--data-dir``: training, its base policy and the benchmark on a real ALFWorld tree.

The real sample (``../shared/data/alfworld``: 6 train and 6 valid_unseen games, one per task type)
is read in place; these tests skip when the checkout has none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hiper_gym.agents import benchmark, sft, trainer

REAL_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alfworld"
TASK_TYPES = {
    "look_at_obj_in_light",
    "pick_and_place_simple",
    "pick_clean_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_two_obj_and_place",
}
QUICK = ["--num-envs", "2", "--max-turns", "3", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def real_tree() -> Path:
    if not (REAL_DATA_DIR / "json_2.1.1").is_dir():
        pytest.skip(f"real ALFWorld sample not found at {REAL_DATA_DIR}")
    return REAL_DATA_DIR


def split_objects(tree: Path, split: str) -> set[str]:
    """The target objects of a split's games, from ALFWorld's folder names (``task-Obj-...``)."""
    return {path.name.split("-")[1].lower() for path in (tree / "json_2.1.1" / split).iterdir()}


def test_the_default_command_trains_from_a_base_on_the_real_games(tmp_path, real_tree):
    argv = ["--data-dir", str(real_tree), "--output-dir", str(tmp_path), "--run-name", "real"]
    argv += ["--base-policy", "sft", "--base-sft-steps", "3", "--num-iterations", "1"]
    argv += ["--eval-episodes", "6", *QUICK, "--max-turns", "40"]
    assert trainer.main(argv) == 0
    run = tmp_path / "real"
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(real_tree)

    # the base cloned the expert on the real training games (their objects are in the prompts)
    demos = sft.load_demonstrations(run / "base" / sft.DEMOS_FILE)
    assert demos.episodes == 6 and not demos.lost_episodes
    first_prompts = " ".join(turn.prompt for turn in demos.turns if turn.turn == 0).lower()
    assert split_objects(real_tree, "train") <= set(first_prompts.replace(".", " ").split())

    # the final evaluation played the real held-out games, one per task type
    final = json.loads((run / trainer.FINAL_EVAL_FILE).read_text())
    assert final["split"] == "valid_unseen" and final["episodes"] == 6
    assert set(final["per_task"]) == TASK_TYPES


def test_a_data_dir_that_is_not_a_tree_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert trainer.main(["ppo", "--data-dir", str(missing), "--output-dir", str(tmp_path)]) == 2
    assert f"--data-dir {missing}: not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["ppo", "--data-dir", str(empty), "--output-dir", str(tmp_path), *QUICK]
    assert trainer.main([*argv, "--base-policy", "none"]) == 2
    assert "no split 'train'" in capsys.readouterr().err
    assert sft.main(["--data-dir", str(missing), "--output-dir", str(tmp_path)]) == 2


def test_a_base_policy_that_cannot_be_made_stops_the_run(tmp_path, real_tree, capsys):
    # no real game is won in 3 turns: the base has no demonstration, and the run says so
    argv = ["--data-dir", str(real_tree), "--output-dir", str(tmp_path), "--base-policy", "sft"]
    assert trainer.main([*argv, *QUICK]) == 2
    assert "the expert won no demonstration episode" in capsys.readouterr().err


def test_the_benchmark_gives_every_run_the_data_dir(tmp_path, real_tree):
    spec = benchmark.BenchmarkSpec(
        runs=[benchmark.RunSpec("ppo", "ppo")], data_dir=str(real_tree), iterations=1
    )
    flags = benchmark.common_flags(spec, spec.runs[0], jobs=1)
    assert flags[flags.index("--data-dir") + 1] == str(real_tree)
    args = benchmark.resolve_train_args(spec.runs[0], flags)
    assert args.data_dir == str(real_tree)
