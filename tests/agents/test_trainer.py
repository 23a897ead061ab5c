"""The shared trainer: every algorithm x both response formats trains, evaluates and resumes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from hiper_gym.agents import advantages, evaluate, gigpo, grpo, hiper, ppo, trainer
from hiper_gym.agents.checkpoint import load_checkpoint
from hiper_gym.agents.run_logger import read_metrics

#: Each algorithm as its command selects it (``hiper-gym train ALGO [flags]``).
ALGORITHMS = {
    "hiper": [],
    "ppo": [],
    "ppo-token": ["--gae-level", "token"],
    "grpo": [],
    "rloo": [],
    "gigpo": ["--anchor-history", "1"],
}
FORMATS = ("plan_execute", "flat")
SMALL = [
    "--num-envs",
    "4",
    "--group-size",
    "2",
    "--max-turns",
    "3",
    "--eval-episodes",
    "2",
    "--env-workers",
    "0",
    "--no-progress",
    "--no-tensorboard",
    "--base-policy",
    "none",
]


def train(tmp_path, key, *argv):
    name = key.split("-")[0]
    flags = [*ALGORITHMS[key], *SMALL, "--output-dir", str(tmp_path), *argv]
    return trainer.main([name, *flags])


@pytest.mark.parametrize("response_format", FORMATS)
@pytest.mark.parametrize("key", list(ALGORITHMS))
def test_every_algorithm_trains_evaluates_and_resumes_exactly(tmp_path, key, response_format):
    common = ["--response-format", response_format, "--checkpoint-every", "1"]
    assert train(tmp_path, key, *common, "--num-iterations", "2", "--run-name", "straight") == 0
    assert train(tmp_path, key, *common, "--num-iterations", "1", "--run-name", "split") == 0
    resume = ["--resume", str(tmp_path / "split"), "--num-iterations", "2"]
    assert trainer.main([key.split("-")[0], *resume, "--no-progress"]) == 0

    _, straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "iter_000002")
    _, resumed = load_checkpoint(tmp_path / "split" / "checkpoints" / "iter_000002")
    assert straight["algorithm"] == resumed["algorithm"] == key.split("-")[0]
    for part in ("actor", "value_head"):
        for name, tensor in (straight[part] or {}).items():
            assert torch.equal(tensor, resumed[part][name]), (part, name)
    rows = [read_metrics(tmp_path / run / "metrics.csv") for run in ("straight", "split")]
    assert [row["iteration"] for row in rows[0]] == ["1", "2"]
    assert rows[0][1]["losses/pg_loss"] == rows[1][1]["losses/pg_loss"]
    assert float(rows[0][-1]["train/format_valid"]) == 1.0  # constrained decoding, either format

    output = tmp_path / "eval.json"
    argv = ["--checkpoint", str(tmp_path / "straight"), "--episodes", "2", "--max-turns", "2"]
    assert evaluate.main([*argv, "--output", str(output)]) == 0
    assert json.loads(output.read_text())["episodes"] == 2


@pytest.mark.parametrize("response_format", FORMATS)
@pytest.mark.parametrize("key", ["hiper", "ppo", "grpo", "rloo", "gigpo"])
def test_every_algorithm_trains_on_webshop(tmp_path, key, response_format):
    argv = ["--env-id", "HiPER-WebShop-v0", "--eval-split", "None", "--num-iterations", "2"]
    argv += ["--response-format", response_format, "--run-name", "w"]
    assert train(tmp_path, key, *argv) == 0
    rows = read_metrics(tmp_path / "w" / "metrics.csv")
    assert [row["iteration"] for row in rows] == ["1", "2"]
    assert float(rows[-1]["train/episode_turns"]) >= 1


def test_the_default_preset_makes_a_webshop_base_without_renaming(tmp_path):
    # HiPER's tiny-cpu preset renames ALFWorld demonstrations; on WebShop the base is plain
    argv = ["--env-id", "HiPER-WebShop-v0", "--output-dir", str(tmp_path), "--run-name", "w"]
    argv += ["--base-policy", "sft", "--base-sft-steps", "2", "--base-demo-episodes", "2"]
    argv += ["--num-iterations", "1", "--num-envs", "2", "--max-turns", "8", "--eval-episodes", "2"]
    assert trainer.main([*argv, "--no-progress", "--no-tensorboard"]) == 0
    config = json.loads((tmp_path / "w" / "base" / "config.json").read_text())
    assert config["rename_copies"] == 0 and config["max_steps"] == 2


def small(preset, **changes):
    return dataclasses.replace(
        preset(), num_envs=4, max_turns=3, env_workers=0, tensorboard=False, **changes
    )


def test_a_group_plays_one_game_with_one_seed():
    learner = trainer.build_learner(grpo.GRPO(small(grpo.tiny_cpu_preset, group_size=2)))
    rollout = trainer.run_rollout(learner)
    groups = {}
    for episode in rollout.episodes:
        groups.setdefault(episode.group_id, set()).add(episode.game)
    assert len(groups) == 2 and all(len(games) == 1 for games in groups.values())
    first = {}
    for turn in rollout.turns:  # the same seed: the same first observation in a group
        if turn.turn_index == 0:
            first.setdefault(turn.group_id, set()).add(turn.observation)
    assert all(len(observations) == 1 for observations in first.values())
    assert all(turn.observation and turn.action for turn in rollout.turns)


def test_critic_free_algorithms_build_no_critic():
    learner = trainer.build_learner(gigpo.GiGPO(small(gigpo.tiny_cpu_preset)))
    assert learner.models.critic is None and learner.models.value_head is None
    metrics = trainer.train_iteration(learner, trainer.DeferredInterrupt())
    assert "losses/value_loss" not in metrics
    assert 0.0 <= metrics["advantages/singleton_step_fraction"] <= 1.0


def test_ppo_heads_read_one_value_per_turn_or_per_token():
    for level, width in (("turn", lambda turn: 1), ("token", lambda turn: len(turn.response_ids))):
        algorithm = ppo.PPO(small(ppo.tiny_cpu_preset, gae_level=level))
        learner = trainer.build_learner(algorithm)
        rollout = trainer.run_rollout(learner)
        scored = trainer.score_turns(learner, rollout.turns)
        assert [v.shape[0] for v in scored["values"]] == [width(t) for t in rollout.turns]
        targets = algorithm.targets(rollout, trainer.stacked_values(scored))
        assert targets.returns.shape[0] == len(rollout.turns)
        assert targets.loss_mask.sum() == sum(len(t.response_ids) for t in rollout.turns)


def test_turn_level_ppo_is_hipers_flat_case():
    """With every turn a SWITCH, HAE's low advantage is flat turn-level GAE (same shaping)."""
    rng = np.random.default_rng(0)
    episode_id = np.repeat(np.arange(4), 5)
    turn_index = np.tile(np.arange(5), 4)
    reward = np.where(turn_index == 4, rng.integers(0, 2, size=20), 0).astype(float)
    done = (turn_index == 4) & (reward > 0)
    value = rng.normal(size=20)
    flat = advantages.compute_gae(
        episode_id=episode_id,
        turn_index=turn_index,
        reward=reward,
        done=done,
        value=value,
        gamma=0.9,
        lam=0.8,
        norm_adv=False,
    )
    config = dataclasses.replace(
        hiper.hae_config(hiper.Args()), gamma=0.9, lam_seg=0.8, lam_turn=0.8, norm_adv=False
    )
    from hiper_gym.agents.hae import compute_hae

    result = compute_hae(
        episode_id=episode_id,
        turn_index=turn_index,
        env_reward=reward,
        done=done,
        format_valid=np.ones(20, dtype=bool),
        is_switch=np.ones(20, dtype=bool),
        has_switch_block=np.ones(20, dtype=bool),
        subgoal_span=[f"<subgoal>{i}</subgoal>" for i in range(20)],
        v_low=value,
        v_high=value,
        v_term=value,
        config=config,
    )
    np.testing.assert_allclose(result.a_high, flat.advantage, atol=1e-9)


def test_bad_settings_are_all_reported_before_any_work(capsys, tmp_path):
    argv = ["--learning-rate", "-1", "--clip-coef", "-1", "--max-prompt-tokens", "0"]
    argv += ["--checkpoint-every", "0", "--gamma", "2", "--lam-seg", "5", "--seed", "-1"]
    argv += ["--device", "bogus", "--env-id", "Nope-v0", "--model", str(tmp_path / "missing")]
    argv += ["--critic-learning-rate", "nan", "--eval-episodes", "0", "--num-envs", "6"]
    argv += ["--group-size", "4", "--output-dir", "/etc/hostname/runs"]  # under a file
    assert trainer.main(argv) == 2
    err = capsys.readouterr().err
    for text in (
        "--learning-rate",
        "--critic-learning-rate",
        "--clip-coef",
        "--max-prompt-tokens",
        "--checkpoint-every",
        "--gamma",
        "--lam-seg",
        "--seed",
        "--device bogus",
        "--env-id Nope-v0",
        "no such model directory",
        "--eval-episodes",
        "multiple of --group-size",
        "--output-dir /etc/hostname/runs: cannot create or write there",
    ):
        assert text in err, text
    assert "Traceback" not in err


def test_unknown_estimator_and_resume_of_another_algorithm_are_clear(capsys, tmp_path):
    assert trainer.main(["grpo", "--estimator", "nope"]) == 2
    assert "--estimator nope: not registered" in capsys.readouterr().err
    assert train(tmp_path, "ppo", "--num-iterations", "1", "--run-name", "p") == 0
    assert trainer.main(["grpo", "--resume", str(tmp_path / "p")]) == 2
    assert "is a ppo run" in capsys.readouterr().err


def test_ctrl_c_in_the_final_evaluation_keeps_every_iteration(tmp_path, monkeypatch):
    original = trainer.final_evaluation

    def interrupted(learner, logger):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "final_evaluation", interrupted)
    argv = ["--num-iterations", "3", "--checkpoint-every", "10", "--run-name", "f"]
    assert train(tmp_path, "hiper", *argv) == 130
    _, state = load_checkpoint(tmp_path / "f")
    assert state["iteration"] == 3  # saved before the final evaluation began
    monkeypatch.setattr(trainer, "final_evaluation", original)
    resume = ["--resume", str(tmp_path / "f"), "--num-iterations", "3", "--no-progress"]
    assert trainer.main(["hiper", *resume]) == 0
    assert [row["iteration"] for row in read_metrics(tmp_path / "f" / "metrics.csv")] == [
        "1",
        "2",
        "3",
    ]
    assert (tmp_path / "f" / trainer.FINAL_EVAL_FILE).is_file()


def test_ctrl_c_in_a_periodic_evaluation_keeps_the_iteration(tmp_path, monkeypatch):
    def interrupted(learner, logger):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "evaluate_and_log", interrupted)
    argv = ["--num-iterations", "3", "--eval-every", "2", "--run-name", "p"]
    assert train(tmp_path, "ppo", *argv) == 130
    _, state = load_checkpoint(tmp_path / "p")
    assert state["iteration"] == 2 and state["env_steps"] > 0
    assert [row["iteration"] for row in read_metrics(tmp_path / "p" / "metrics.csv")] == ["1", "2"]


def test_held_out_evaluation_is_logged_per_task_and_beside_the_training_games(tmp_path):
    argv = ["--num-iterations", "2", "--eval-every", "1", "--eval-greedy", "--run-name", "e"]
    assert train(tmp_path, "grpo", *argv) == 0
    rows = read_metrics(tmp_path / "e" / "eval.csv")
    assert {row["split"] for row in rows} == {"valid_unseen"}
    assert {row["mode"] for row in rows} == {"sampled", "greedy"}
    assert {row["iteration"] for row in rows} == {"1", "2"}
    assert any(row["task_type"] == "all" for row in rows)
    assert any(row["task_type"] not in ("all", "") for row in rows)
    metrics = read_metrics(tmp_path / "e" / "metrics.csv")
    assert int(metrics[-1]["env_steps"]) > int(metrics[0]["env_steps"]) > 0
    assert metrics[0]["eval/success"] != ""
    final = json.loads((tmp_path / "e" / trainer.FINAL_EVAL_FILE).read_text())
    assert final["split"] == "valid_unseen" and final["train_games"]["episodes"] == 2


def test_eval_flags_are_checked_before_loading(tmp_path, capsys):
    assert train(tmp_path, "hiper", "--num-iterations", "1", "--run-name", "r") == 0
    run = str(tmp_path / "r")
    for argv, text in (
        (["--episodes", "-1"], "--episodes must be >= 1"),
        (["--temperature", "-1"], "--temperature must be"),
        (["--split", "bogus"], "bogus"),
    ):
        assert evaluate.main(["--checkpoint", run, *argv]) == 2
        assert text in capsys.readouterr().err
    output = tmp_path / "greedy.json"
    argv = ["--checkpoint", run, "--temperature", "0", "--episodes", "2", "--output", str(output)]
    assert evaluate.main([*argv, "--max-turns", "2"]) == 0  # 0 is greedy, not "unset"
    assert json.loads(output.read_text())["episodes"] == 2
    transcripts = tmp_path / "turns.jsonl"
    argv = ["--checkpoint", run, "--episodes", "3", "--max-turns", "2"]
    assert evaluate.main([*argv, "--transcripts", str(transcripts)]) == 0
    rows = [json.loads(line) for line in transcripts.read_text().splitlines()]
    assert sorted({row["episode"] for row in rows}) == [0, 1, 2]
    assert all(row["turn"] < 2 and row["task_type"] and row["action"] for row in rows)
    assert rows[0]["switch"] and rows[0]["subgoal"]  # a Plan-Execute episode opens a subgoal
    assert "turns per subgoal" in capsys.readouterr().out


def test_subgoal_use_counts_segments_and_their_actions():
    def row(episode, switch, subgoal, action):
        return {"episode": episode, "switch": switch, "subgoal": subgoal, "action": action}

    rows = [
        row(0, True, "take x 1 from y 1", "go to y 1"),
        row(0, False, "take x 1 from y 1", "take x 1 from y 1"),  # carried out in its segment
        row(0, True, "put x 1 in z 1", "go to w 1"),  # only its two "1"s played
        row(1, False, "open q 1", "look"),  # a new episode opens a segment
    ]
    use = evaluate.subgoal_use(rows)
    assert use["switch_rate"] == 0.5 and use["segment_length"] == 4 / 3
    assert use["carried_out"] == pytest.approx(1 / 3)
    assert use["words_acted"] == pytest.approx((1 + 2 / 6 + 0) / 3)


def test_envs_on_ray_actors_train_like_local_workers(tmp_path):
    pytest.importorskip("ray")
    argv = ["--num-iterations", "1", "--checkpoint-every", "1", "--eval-episodes", "2"]
    base = ["grpo", "--num-envs", "4", "--group-size", "2", "--max-turns", "3", "--no-progress"]
    base += ["--no-tensorboard", "--output-dir", str(tmp_path), *argv]
    assert trainer.main([*base, "--env-workers", "1", "--run-name", "local"]) == 0
    ray_flags = ["--env-backend", "ray", "--env-workers", "1", "--run-name", "ray"]
    assert trainer.main([*base, *ray_flags]) == 0
    _, local = load_checkpoint(tmp_path / "local")
    _, on_ray = load_checkpoint(tmp_path / "ray")
    for name, tensor in local["actor"].items():  # the same rollout, so the same update
        assert torch.equal(tensor, on_ray["actor"][name]), name


def test_ray_flags_are_checked(capsys):
    assert trainer.main(["--env-backend", "ray", "--env-workers", "0"]) == 2
    assert "--env-workers >= 1" in capsys.readouterr().err
    assert trainer.main(["--ray-address", "auto"]) == 2
    assert "--ray-address needs --env-backend ray" in capsys.readouterr().err
