"""Constrained decoding: every sampled response is well-formed and names an admissible command."""

from __future__ import annotations

import pytest
import torch
from hiper_gym.agents.constrained import ResponseGrammar, ResponseState, allowed_token_masks
from hiper_gym.agents.models import TinyShape, load_actor, model_config
from hiper_gym.agents.policy import sample_responses
from hiper_gym.agents.tokenizer_builder import build_word_tokenizer
from hiper_gym.wrappers import parse_response

COMMANDS = ["go to cabinet 1", "go to cabinet 10", "take mug 2 from cabinet 1", "look"]


@pytest.fixture(scope="module")
def setup():
    tokenizer = build_word_tokenizer(COMMANDS + ["find the mug first"])
    torch.manual_seed(0)
    config = model_config("tiny", len(tokenizer), TinyShape())
    actor = load_actor("tiny", config, dtype=torch.float32, device="cpu")
    grammar = ResponseGrammar.from_tokenizer(tokenizer, len(tokenizer), max_subgoal_tokens=3)
    return tokenizer, actor, grammar


def sample(setup, subgoals, seed=0):
    tokenizer, actor, grammar = setup
    torch.manual_seed(seed)
    prompts = [
        tokenizer.encode("look " * (3 + i), add_special_tokens=False) for i in range(len(subgoals))
    ]
    states = [ResponseState(grammar, COMMANDS, subgoal) for subgoal in subgoals]
    return sample_responses(
        actor, tokenizer, prompts, temperature=1.0, max_new_tokens=40, states=states
    )


def test_sampled_responses_parse_and_act_admissibly(setup):
    tokenizer = setup[0]
    subgoals = [None, "find the mug"] * 6
    for response in sample(setup, subgoals):
        assert response[-1] == tokenizer.eos_token_id
        parsed = parse_response(tokenizer.decode(response, skip_special_tokens=True))
        assert parsed.format_valid
        assert parsed.action in COMMANDS
        assert parsed.switch in ("KEEP", "SWITCH")


def test_keep_copies_the_current_subgoal_and_switch_writes_at_most_the_limit(setup):
    tokenizer = setup[0]
    subgoals = ["find the mug"] * 16
    for response in sample(setup, subgoals, seed=1):
        text = tokenizer.decode(response, skip_special_tokens=True)
        parsed = parse_response(text, current_subgoal="find the mug")
        if parsed.switch == "KEEP":
            assert parsed.subgoal_block.text == "find the mug"
        else:
            assert 1 <= len(parsed.subgoal_block.text.split()) <= 3


def test_replayed_masks_allow_each_sampled_token(setup):
    tokenizer, _, grammar = setup
    for response, subgoal in zip(sample(setup, [None, "look"]), [None, "look"], strict=True):
        masks = allowed_token_masks(grammar, COMMANDS, subgoal, response)
        assert masks.shape == (len(response), len(tokenizer))
        assert all(masks[i, token] for i, token in enumerate(response))
        forced = masks.sum(-1) == 1
        assert forced[0]  # "<switch>" is forced


def test_a_response_outside_the_grammar_is_rejected(setup):
    tokenizer, _, grammar = setup
    response = tokenizer.encode("<action>look</action>", add_special_tokens=False)
    with pytest.raises(ValueError, match="outside the grammar"):
        allowed_token_masks(grammar, COMMANDS, None, response)


def test_prefix_commands_stay_distinct(setup):
    tokenizer, _, grammar = setup
    text = "<switch>SWITCH</switch><subgoal> look</subgoal><action>go to cabinet 1</action>"
    response = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    masks = allowed_token_masks(grammar, COMMANDS, None, response)
    after_one = text.index(" 1</action>")
    position = len(tokenizer.encode(text[:after_one], add_special_tokens=False))
    allowed = {tokenizer.decode([token]) for token in masks[position].nonzero().flatten()}
    assert allowed == {" 1", " 10"}


def test_no_admissible_commands_is_a_clear_error(setup):
    with pytest.raises(ValueError, match="at least one admissible command"):
        ResponseState(setup[2], [], None)


def test_forced_tail_is_known_once_the_command_is_unique(setup):
    tokenizer, _, grammar = setup
    state = ResponseState(grammar, COMMANDS, None)
    prefix = "<switch>SWITCH</switch><subgoal> look</subgoal><action>"
    for token in tokenizer.encode(prefix, add_special_tokens=False):
        assert state.forced_tail(token) is None  # the command is still to be chosen
        state.advance(token)
    tail = state.forced_tail(tokenizer.encode("take", add_special_tokens=False)[0])
    rest = tokenizer.encode(" mug 2 from cabinet 1</action>", add_special_tokens=False)
    assert tail == rest + [tokenizer.eos_token_id]  # only one command starts with "take"
    go_to_cabinet = ResponseState(grammar, COMMANDS, None)
    for token in tokenizer.encode(prefix + "go to", add_special_tokens=False):
        go_to_cabinet.advance(token)
    cabinet = tokenizer.encode(" cabinet", add_special_tokens=False)[0]
    assert go_to_cabinet.forced_tail(cabinet) is None  # "1" or "10"


def test_finished_rows_are_reported_once_with_their_sampled_response(setup):
    tokenizer, actor, grammar = setup
    subgoals = [None, "find the mug"] * 4
    reports = {}
    during_generation = []
    generate = actor.generate

    def on_finished(row, response_ids):
        assert row not in reports
        reports[row] = response_ids
        during_generation.append(generating)

    def tracked_generate(*args, **kwargs):
        nonlocal generating
        generating = True
        try:
            return generate(*args, **kwargs)
        finally:
            generating = False

    generating = False
    torch.manual_seed(2)
    prompts = [tokenizer.encode("look " * (3 + i), add_special_tokens=False) for i in range(8)]
    actor.generate = tracked_generate
    try:
        responses = sample_responses(
            actor,
            tokenizer,
            prompts,
            temperature=1.0,
            max_new_tokens=40,
            states=[ResponseState(grammar, COMMANDS, subgoal) for subgoal in subgoals],
            on_finished=on_finished,
        )
    finally:
        del actor.generate
    assert reports == dict(enumerate(responses))
    assert any(during_generation)  # envs can step while the batch finishes
    torch.manual_seed(2)
    again = sample(setup, subgoals, seed=2)
    assert again == responses  # reporting does not change what is sampled
