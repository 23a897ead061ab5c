"""Env workers: the same replies and rollouts as envs in the learner's process; clear errors."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from hiper_gym.agents import hiper
from hiper_gym.agents.env_workers import EnvWorkers, InProcessEnvs, make_plan_execute_env
from hiper_gym.agents.learner_setup import build_env_tokenizer

MAX_PROMPT_TOKENS = 256
MAKE_ALFWORLD = functools.partial(make_plan_execute_env, "HiPER-ALFWorld-v0")


@pytest.fixture(scope="module")
def tokenizer():
    return build_env_tokenizer([MAKE_ALFWORLD()], play_episodes=2)


def comparable(reply):
    """A reply's content without its timings."""
    reading = reply.reading
    read = None
    if reading is not None:
        layout = reading.layout
        masks = (layout.switch_mask, layout.subgoal_mask, layout.action_mask)
        read = (
            reading.text,
            [mask.tolist() for mask in masks],
            layout.low_value_index,
            reading.is_switch,
            reading.subgoal_span,
            reading.format_valid,
        )
    return reply.prompt_ids, reply.info, reply.terminated, reply.truncated, read


def play_script(envs, tokenizer, turns=4):
    """Reset two envs, then answer each with its first admissible command for a few turns."""
    replies = []
    for index in range(2):
        envs.send_reset(
            index, seed=index, options={"game": index}, max_prompt_tokens=MAX_PROMPT_TOKENS
        )
    infos = []
    for index in range(2):
        replies.append(envs.reply(index))
        infos.append(replies[-1].info)
    for turn in range(turns):
        for index in range(2):
            command = infos[index]["admissible_commands"][turn % 2]
            subgoal = "find a mug" if turn == 0 else None
            switch = "SWITCH" if subgoal else "KEEP"
            text = f"<switch>{switch}</switch><subgoal>{subgoal or 'find a mug'}</subgoal>"
            ids = tokenizer.encode(f"{text}<action>{command}</action>", add_special_tokens=False)
            envs.send_response(
                index,
                ids + [tokenizer.eos_token_id],
                current_subgoal=infos[index].get("subgoal"),
                max_prompt_tokens=MAX_PROMPT_TOKENS,
            )
        for index in range(2):
            replies.append(envs.reply(index))
            infos[index] = replies[-1].info
        envs.idle()  # workers collect garbage; no reply comes back to confuse the next turn
    return [comparable(reply) for reply in replies]


def test_workers_reply_as_the_envs_do_in_process(tokenizer):
    in_process = play_script(
        InProcessEnvs([MAKE_ALFWORLD(), MAKE_ALFWORLD()], tokenizer), tokenizer
    )
    with EnvWorkers([MAKE_ALFWORLD] * 2, tokenizer, num_workers=2) as workers:
        assert play_script(workers, tokenizer) == in_process
    assert in_process[-1][4][0].startswith("<switch>KEEP</switch>")  # the responses were read
    assert all(len(reply[0]) <= MAX_PROMPT_TOKENS for reply in in_process)


def test_a_learner_with_env_workers_collects_the_same_rollout():
    args = dataclasses.replace(
        hiper.tiny_cpu_preset(), num_envs=3, max_turns=5, tensorboard=False, seed=4
    )
    rollouts = []
    for workers in (0, 2):
        learner = hiper.build_learner(dataclasses.replace(args, env_workers=workers))
        try:
            rollouts.append(hiper.run_rollout(learner))
        finally:
            hiper.close_learner_envs(learner)
    in_process, with_workers = rollouts
    assert len(in_process.turns) == len(with_workers.turns) > 3
    for mine, theirs in zip(in_process.turns, with_workers.turns, strict=True):
        for field in dataclasses.fields(mine):
            a, b = getattr(mine, field.name), getattr(theirs, field.name)
            assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, field.name
    assert in_process.episodes == with_workers.episodes
    assert with_workers.times.in_workers > 0 and in_process.times.in_workers == 0


def test_an_error_in_an_env_comes_back_with_its_traceback_and_the_worker_goes_on(tokenizer):
    with EnvWorkers([MAKE_ALFWORLD], tokenizer, num_workers=1) as workers:
        workers.send_reset(0, seed=0, options={"game": 10**6}, max_prompt_tokens=64)
        with pytest.raises(RuntimeError, match="env 0 failed in its worker process") as error:
            workers.reply(0)
        assert "Traceback" in str(error.value)
        workers.send_reset(0, seed=0, options={"game": 1}, max_prompt_tokens=64)
        assert workers.reply(0).info["admissible_commands"]


def test_a_worker_that_cannot_build_its_envs_says_why(tokenizer):
    make_missing = functools.partial(make_plan_execute_env, "HiPER-NoSuchEnv-v0")
    with EnvWorkers([make_missing], tokenizer, num_workers=1) as workers:
        with pytest.raises(RuntimeError, match="could not build its envs(.|\n)*NoSuchEnv"):
            workers.send_reset(0, seed=0, options=None, max_prompt_tokens=64)


def test_env_functions_that_do_not_pickle_are_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="must pickle"):
        EnvWorkers([lambda: MAKE_ALFWORLD()], tokenizer, num_workers=1)


def test_requests_out_of_turn_are_clear_errors(tokenizer):
    envs = InProcessEnvs([MAKE_ALFWORLD()], tokenizer)
    with pytest.raises(RuntimeError, match="no request waiting"):
        envs.reply(0)
    with pytest.raises(IndexError, match="out of range"):
        envs.send_reset(1, seed=0, options=None, max_prompt_tokens=64)
    envs.send_reset(0, seed=0, options=None, max_prompt_tokens=64)
    with pytest.raises(RuntimeError, match="already has a request"):
        envs.send_reset(0, seed=0, options=None, max_prompt_tokens=64)
    with pytest.raises(ValueError, match="num_workers"):
        EnvWorkers([MAKE_ALFWORLD], tokenizer, num_workers=0)
    workers = EnvWorkers([MAKE_ALFWORLD], tokenizer, num_workers=3)
    assert workers.num_workers == 1  # never more workers than envs
    workers.close()
    workers.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        workers.send_reset(0, seed=0, options=None, max_prompt_tokens=64)
