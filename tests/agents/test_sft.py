"""``hiper-gym sft``: demonstrations, the cloning loss, the model directory, resume, the base."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import safetensors.torch
import torch

from hiper_gym import cli
from hiper_gym.agents import sft, trainer
from hiper_gym.agents.checkpoint import load_checkpoint
from hiper_gym.agents.constrained import allowed_token_masks
from hiper_gym.agents.learner_setup import load_tokenizer, make_envs
from hiper_gym.agents.tokenizer_builder import split_words
from hiper_gym.webshop.oracle import shopper_actions
from hiper_gym.wrappers import parse_response, plan_to_subgoals

FORMATS = ("plan_execute", "flat")
#: A short run: a few demonstrations, a few steps, no evaluation.
QUICK = [
    "--demo-episodes",
    "3",
    "--max-steps",
    "4",
    "--batch-size",
    "8",
    "--checkpoint-every",
    "2",
    "--eval-episodes",
    "0",
    "--no-progress",
]


def quick_args(tmp_path, **changes) -> sft.Args:
    """The ``tiny-cpu`` settings at a test's size."""
    settings = {
        "output_dir": str(tmp_path),
        "run_name": "run",
        "demo_episodes": 3,
        "max_steps": 4,
        "batch_size": 8,
        "eval_episodes": 0,
        "progress": False,
    }
    return dataclasses.replace(sft.Args(), **{**settings, **changes})


def setup(args: sft.Args):
    """Tokenizer, actor, grammar and demonstrations as a run builds them."""
    torch.set_num_threads(args.threads)  # as main does: one thread beats two on busy cores
    trainer.seed_everything(args.seed)
    tokenizer = sft.build_tokenizer(args)
    actor = sft.build_actor(args, tokenizer)
    grammar = sft.build_grammar(args, tokenizer, actor)
    return tokenizer, actor, grammar, sft.collect_demonstrations(args, tokenizer, grammar)


@pytest.fixture(scope="module", params=FORMATS)
def alfworld(request, tmp_path_factory):
    args = quick_args(tmp_path_factory.mktemp("sft"), response_format=request.param)
    return args, *setup(args)


def walkthrough(game: int) -> list[str]:
    env = gym.make("HiPER-ALFWorld-v0", split="train", expert="walkthrough")
    _, info = env.reset(seed=0, options={"game": game})
    return list(info["expert_plan"])


def test_alfworld_demonstrations_are_format_valid_and_follow_the_expert_plan(alfworld):
    args, tokenizer, _, grammar, demos = alfworld
    assert demos.episodes == 3 and not demos.lost_episodes
    style = args.response_format
    for episode in {turn.episode for turn in demos.turns}:
        turns = [turn for turn in demos.turns if turn.episode == episode]
        plan = walkthrough(turns[0].game)
        assert [turn.command for turn in turns] == plan  # the whole walkthrough, then won
        subgoals = iter(plan_to_subgoals(plan))
        current = None
        for turn in turns:
            assert tokenizer.decode(turn.response_ids, skip_special_tokens=True) == turn.response
            assert turn.response_ids[-1] == tokenizer.eos_token_id
            parsed = parse_response(turn.response, current_subgoal=current, style=style)
            assert parsed.format_valid and parsed.action == turn.command
            allowed_token_masks(
                grammar, turn.admissible_commands, turn.keep_copy, turn.response_ids
            )
            if style == "flat":
                assert turn.response == f"<action>{turn.command}</action>"
                continue
            if turn.switch:  # a new subgoal: the plan's next target, in words
                target = next(subgoals)
                assert turn.subgoal == " " + " ".join(split_words(target))
                assert parsed.is_new_segment_marker
            else:  # KEEP repeats the subgoal in force, verbatim
                assert turn.subgoal == turn.keep_copy and not parsed.is_new_segment_marker
            assert parsed.subgoal == turn.subgoal.strip()
            current = parsed.subgoal
        if style == "plan_execute":
            assert next(subgoals, None) is None  # every subgoal of the plan was written


def handcoded_commands(game: int, seed: int) -> list[str]:
    """ALFWorld's handcoded expert played alone: one command per step."""
    env = gym.make("HiPER-ALFWorld-v0", split="train", expert="handcoded")
    _, info = env.reset(seed=seed, options={"game": game})
    commands = []
    while info["expert_plan"] and len(commands) < 40:
        commands.append(info["expert_plan"][0])
        *_, terminated, truncated, info = env.step(commands[-1])
        if terminated or truncated:
            break
    return commands


def test_the_searching_expert_is_replayed_and_won(tmp_path):
    args = quick_args(tmp_path, demo_expert="handcoded", demo_episodes=6)
    _, _, _, demos = setup(args)
    won = sorted({turn.episode for turn in demos.turns})
    assert len(won) + len(demos.lost_episodes) == 6 and won
    seeds = sft.demo_seeds(args, 6)
    for episode in won:
        turns = [turn for turn in demos.turns if turn.episode == episode]
        # the expert's own episode, step for step (it starts by looking around, then searches)
        assert [t.command for t in turns] == handcoded_commands(turns[0].game, seeds[episode])
        assert turns[0].command == "look"
        assert [t.switch for t in turns][0] and sum(t.switch for t in turns) >= 2


def test_demonstration_prompts_are_the_trainers(alfworld):
    args, tokenizer, actor, grammar, demos = alfworld
    first = demos.turns[0]
    env = make_envs(
        args.env_id,
        1,
        split=args.train_split,
        history_length=args.history_length,
        prompt_style=args.prompt_style,
        response_format=args.response_format,
    )[0]
    turns = [turn for turn in demos.turns if turn.episode == first.episode]
    seed = sft.demo_seeds(args, demos.episodes)[first.episode]
    prompt, _ = env.reset(seed=seed, options={"game": first.game})
    for turn in turns:
        assert prompt == turn.prompt
        prompt, *_ = env.step(turn.response)


def test_subgoals_split_the_plan_at_non_navigation_steps():
    plan = ["go to a", "take x from a", "go to b", "move x to b", "go to c"]
    segments = sft.plan_segments(plan, lambda command: command.startswith("go to "))
    assert segments == [
        ("take x from a", True),
        ("take x from a", False),
        ("move x to b", True),
        ("move x to b", False),
        ("go to c", True),
    ]


@pytest.mark.parametrize("response_format", FORMATS)
def test_webshop_demonstrations_are_the_shoppers_purchase(tmp_path, response_format):
    args = quick_args(tmp_path, env_id="HiPER-WebShop-v0", response_format=response_format)
    tokenizer, _, grammar, demos = setup(args)
    assert demos.turns and not demos.lost_episodes
    env = gym.make("HiPER-WebShop-v0", split="train")
    shop, goals = env.unwrapped.shop, env.unwrapped.split_indices
    for episode in {turn.episode for turn in demos.turns}:
        turns = [turn for turn in demos.turns if turn.episode == episode]
        goal_index = goals[turns[0].game]
        query = turns[0].command.removeprefix("search[").removesuffix("]")
        assert [t.command for t in turns] == shopper_actions(shop, goal_index, query=query)
        assert turns[-1].command == "click[buy now]"
        current = None
        for turn in turns:
            parsed = parse_response(
                turn.response, current_subgoal=current, flavor="webshop", style=response_format
            )
            assert parsed.format_valid and parsed.action == turn.command
            allowed_token_masks(
                grammar, turn.admissible_commands, turn.keep_copy, turn.response_ids
            )
            current = parsed.subgoal


def test_the_demonstration_amount_is_a_flag(tmp_path):
    args = quick_args(tmp_path, demo_episodes=None)
    assert sorted(sft.demo_games(36, args)) == list(range(36))
    assert len(sft.demo_games(36, dataclasses.replace(args, demo_fraction=0.25))) == 9
    cycled = sft.demo_games(36, dataclasses.replace(args, demo_episodes=40))
    assert cycled[36:] == cycled[:4]


def test_bad_settings_are_reported_before_any_work(tmp_path, capsys):
    argv = ["--demo-episodes", "0", "--demo-fraction", "1.5", "--learning-rate", "0"]
    assert sft.main([*argv, "--output-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    for flag in ("--demo-episodes", "--demo-fraction", "--learning-rate", "not both"):
        assert flag in error
    assert not any(tmp_path.iterdir())


def test_the_cli_runs_sft():
    module, function, _ = cli.SUBCOMMANDS["sft"]
    assert (module, function) == ("hiper_gym.agents.sft", "main")


def test_the_cloning_loss_goes_down(alfworld):
    args, tokenizer, actor, grammar, demos = alfworld
    state = sft.make_state(dataclasses.replace(args, max_steps=8), tokenizer, actor, grammar, demos)
    everything = list(range(len(demos.turns)))

    def loss() -> float:
        with torch.no_grad():
            nll, tokens = sft.response_nll(state, everything)
        return float(nll) / tokens

    before = loss()
    losses = [sft.train_step(state, trainer.DeferredInterrupt())["loss"] for _ in range(8)]
    assert loss() < 0.85 * before
    assert losses[-1] < losses[0]


def test_the_model_directory_trains_under_the_trainer(tmp_path):
    assert sft.main([*QUICK, "--output-dir", str(tmp_path), "--run-name", "base"]) == 0
    run = tmp_path / "base"
    model = run / sft.MODEL_DIR
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,loss,response_tokens,grad_norm,learning_rate,seconds"
    assert len(rows) == 1 + 4
    # the trainer reads the word-level tokenizer as it was (not as a Qwen2 BPE, see load_tokenizer)
    demo = json.loads((run / sft.DEMOS_FILE).read_text().splitlines()[1])
    tokenizer = load_tokenizer(str(model))
    assert tokenizer.encode(demo["response"], add_special_tokens=False) == demo["response_ids"][:-1]
    flags = ["--model", str(model), "--num-envs", "2", "--group-size", "2", "--max-turns", "3"]
    flags += ["--num-iterations", "1", "--eval-episodes", "1", "--env-workers", "0"]
    flags += ["--no-progress", "--no-tensorboard", "--output-dir", str(tmp_path)]
    assert trainer.main(["grpo", *flags, "--run-name", "rl"]) == 0
    _, state = load_checkpoint(tmp_path / "rl")
    loaded = safetensors.torch.load_file(str(model / "model.safetensors"))
    assert set(loaded) <= set(state["actor"])  # the trainer's actor is the saved base


def test_resume_and_ctrl_c_continue_exactly(tmp_path, monkeypatch):
    common = [*QUICK, "--output-dir", str(tmp_path)]
    assert sft.main([*common, "--run-name", "straight"]) == 0

    step = sft.train_step
    calls = {"n": 0}

    def interrupted(state, defer):
        calls["n"] += 1
        if calls["n"] == 4:  # Ctrl-C before the fourth step: steps 1-3 are kept
            raise KeyboardInterrupt
        return step(state, defer)

    monkeypatch.setattr(sft, "train_step", interrupted)
    assert sft.main([*common, "--run-name", "cut"]) == 130
    monkeypatch.setattr(sft, "train_step", step)
    assert (tmp_path / "cut" / "checkpoints" / "iter_000003").is_dir()
    resume = ["--resume", str(tmp_path / "cut"), "--max-steps", "4", "--no-progress"]
    assert sft.main(resume) == 0

    files = [tmp_path / run / "model" / "model.safetensors" for run in ("straight", "cut")]
    straight, resumed = (safetensors.torch.load_file(str(path)) for path in files)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    metrics = [(tmp_path / run / "metrics.csv").read_text() for run in ("straight", "cut")]
    losses = [[row.split(",")[2] for row in text.splitlines()] for text in metrics]
    assert losses[0] == losses[1]


def random_success(split: str, episodes_per_game: int, max_turns: int) -> float:
    """Uniform random admissible commands (the baseline a base policy must beat)."""
    env = gym.make("HiPER-ALFWorld-v0", split=split)
    rng = np.random.default_rng(0)
    wins = []
    for _ in range(episodes_per_game):
        for game in range(env.unwrapped.num_games):
            _, info = env.reset(seed=int(rng.integers(2**31 - 1)), options={"game": game})
            for _ in range(max_turns):
                commands = info["admissible_commands"]
                _, _, terminated, truncated, info = env.step(commands[rng.integers(len(commands))])
                if terminated or truncated:
                    break
            wins.append(bool(info["won"]))
    return float(np.mean(wins))


@pytest.mark.slow
def test_a_base_beats_the_random_policy_on_the_training_games(tmp_path):
    argv = ["--max-steps", "120", "--eval-episodes", "72", "--eval-split", "train"]
    assert sft.main([*argv, "--no-progress", "--output-dir", str(tmp_path), "--run-name", "b"]) == 0
    base = json.loads((tmp_path / "b" / sft.BASE_EVAL_FILE).read_text())["splits"]["train"]
    random_policy = random_success("train", episodes_per_game=2, max_turns=40)
    assert random_policy < 0.25
    assert base["success"] > random_policy + 0.2, (base["success"], random_policy)


def test_evaluation_reports_both_splits(alfworld, tmp_path):
    args, tokenizer, actor, grammar, demos = alfworld
    args = dataclasses.replace(args, eval_episodes=2, eval_envs=2, max_turns=2)
    state = sft.make_state(args, tokenizer, actor, grammar, demos)
    report = sft.report_evaluation(state, tmp_path)
    assert set(report["splits"]) == {"train", "valid_unseen"}
    saved = json.loads((tmp_path / sft.BASE_EVAL_FILE).read_text())
    assert saved["demo_turns"] == len(demos.turns)
    assert saved["splits"]["valid_unseen"]["episodes"] == 2
