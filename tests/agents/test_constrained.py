"""Constrained decoding: every sampled response is well-formed and names an admissible command."""

from __future__ import annotations

import pytest
import torch
from hiper_gym.agents.constrained import ResponseGrammar, ResponseState, allowed_token_masks
from hiper_gym.agents.env_workers import make_plan_execute_env
from hiper_gym.agents.models import TinyShape, load_actor, model_config
from hiper_gym.agents.policy import sample_responses
from hiper_gym.agents.tokenizer_builder import build_word_tokenizer
from hiper_gym.wrappers import parse_response
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

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


# --- Template commands: WebShop's search[<your query>] is decoded as a free query. ---

SEARCH_TEMPLATE = "search[<your query>]"
CLICKS = ["click[buy now]", "click[back to search]"]
MAX_QUERY_TOKENS = 4


@pytest.fixture(scope="module")
def webshop():
    """A WebShop env at its search page, a tokenizer of its words, the tiny actor and a grammar."""
    env = make_plan_execute_env("HiPER-WebShop-v0")
    observation, info = env.reset(seed=0)
    assert info["admissible_commands"] == [SEARCH_TEMPLATE]
    tokenizer = build_word_tokenizer([observation, SEARCH_TEMPLATE, *CLICKS])
    torch.manual_seed(0)
    config = model_config("tiny", len(tokenizer), TinyShape())
    actor = load_actor("tiny", config, dtype=torch.float32, device="cpu")
    grammar = ResponseGrammar.from_tokenizer(
        tokenizer, len(tokenizer), max_subgoal_tokens=3, max_query_tokens=MAX_QUERY_TOKENS
    )
    return env, observation, tokenizer, actor, grammar


class RecordingState(ResponseState):
    """A state that keeps every mask it gave the logits processor, i.e. what was sampled from."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.masks: list[torch.Tensor] = []

    def mask(self) -> torch.Tensor:
        mask = super().mask()
        self.masks.append(mask)
        return mask


def sample_webshop(webshop, commands, rows, seed=0, on_finished=None):
    """Sample ``rows`` responses from the WebShop prompt; returns them and their states."""
    _, observation, tokenizer, actor, grammar = webshop
    torch.manual_seed(seed)
    prompt = tokenizer.encode(observation, add_special_tokens=False)
    states = [RecordingState(grammar, commands, None) for _ in range(rows)]
    responses = sample_responses(
        actor,
        tokenizer,
        [prompt] * rows,
        temperature=1.0,
        max_new_tokens=40,
        states=states,
        on_finished=on_finished,
    )
    return responses, states


def search_query(action: str) -> str | None:
    """The query of a ``search[...]`` action, or ``None`` for any other action."""
    if action.startswith("search[") and action.endswith("]"):
        return action[len("search[") : -1]
    return None


def assert_free_query(query: str) -> None:
    """A query the model wrote: 1 to MAX_QUERY_TOKENS words, no placeholder, no bracket."""
    assert query.strip() != "<your query>"
    assert 1 <= len(query.split()) <= MAX_QUERY_TOKENS
    assert not set("<>[]") & set(query)


def test_template_commands_are_decoded_as_a_free_query(webshop):
    tokenizer = webshop[2]
    reported = {}
    responses, _ = sample_webshop(
        webshop, [SEARCH_TEMPLATE], 12, on_finished=lambda row, ids: reported.update({row: ids})
    )
    queries = []
    for response in responses:
        assert response[-1] == tokenizer.eos_token_id
        parsed = parse_response(tokenizer.decode(response, skip_special_tokens=True))
        assert parsed.format_valid
        query = search_query(parsed.action)
        assert query is not None, parsed.action
        assert_free_query(query)
        queries.append(query)
    assert len(set(queries)) > 1  # the model's own words, not one forced text
    assert reported == dict(enumerate(responses))  # forced tails matched what was sampled


def test_a_template_and_clicks_share_the_action(webshop):
    tokenizer = webshop[2]
    responses, _ = sample_webshop(webshop, [SEARCH_TEMPLATE, *CLICKS], 24, seed=1)
    kinds = set()
    for response in responses:
        action = parse_response(tokenizer.decode(response, skip_special_tokens=True)).action
        query = search_query(action)
        if query is None:
            assert action in CLICKS
            kinds.add("click")
        else:
            assert_free_query(query)
            kinds.add("search")
    assert kinds == {"click", "search"}


def test_replayed_masks_are_the_sampling_masks_of_a_query(webshop):
    tokenizer, grammar = webshop[2], webshop[4]
    commands = [SEARCH_TEMPLATE, *CLICKS]
    responses, states = sample_webshop(webshop, commands, 8, seed=2)
    close = tokenizer.convert_tokens_to_ids("]")
    searched = 0
    for response, state in zip(responses, states, strict=True):
        masks = allowed_token_masks(grammar, commands, None, response)
        assert all(masks[i, token] for i, token in enumerate(response))
        # The PPO log-probabilities are those of the distribution the tokens were drawn from.
        assert torch.equal(masks, torch.stack(state.masks[: len(response)]))
        text = tokenizer.decode(response, skip_special_tokens=True)
        if search_query(parse_response(text).action) is not None:
            searched += 1  # its query positions were free, not forced
            start = response.index(tokenizer.convert_tokens_to_ids("[")) + 1
            assert (masks[start : response.index(close)].sum(-1) > 1).all()
    assert searched


def test_a_query_stops_at_its_limit_and_then_its_tail_is_forced(webshop):
    tokenizer, grammar = webshop[2], webshop[4]
    state = ResponseState(grammar, [SEARCH_TEMPLATE, *CLICKS], None)
    (click,) = tokenizer.encode("click", add_special_tokens=False)
    prefix = "<switch>SWITCH</switch><subgoal> shirt</subgoal><action>"
    for token in tokenizer.encode(prefix, add_special_tokens=False):
        state.advance(token)
    search, bracket = tokenizer.encode("search[", add_special_tokens=False)
    assert state.forced_tail(search) is None  # the query is still to be written
    assert state.forced_tail(click) is None  # "buy now" or "back to search"
    state.advance(search)
    assert state.forced_tail(bracket) is None
    state.advance(bracket)
    close = tokenizer.convert_tokens_to_ids("]")
    assert not state.mask()[close]  # a query has at least one token
    words = tokenizer.encode(" long sleeve button down shirt", add_special_tokens=False)
    for count, word in enumerate(words[:MAX_QUERY_TOKENS]):
        assert state.mask()[word]
        assert state.forced_tail(word) is None  # the query is free text
        state.advance(word)
        assert state.mask()[close] and state.forced_tail(close) == [
            tokenizer.convert_tokens_to_ids("</action>"),
            tokenizer.eos_token_id,
        ], count
    assert state.mask().nonzero().flatten().tolist() == [close]  # MAX_QUERY_TOKENS written
    state.advance(close)
    assert state.allowed() == [tokenizer.convert_tokens_to_ids("</action>")]
    assert ResponseGrammar.from_tokenizer(tokenizer, len(tokenizer), 3).max_query_tokens == 16
    with pytest.raises(ValueError, match="max_query_tokens"):
        ResponseGrammar.from_tokenizer(tokenizer, len(tokenizer), 3, max_query_tokens=0)


def test_a_webshop_episode_searches_the_models_query(webshop):
    env, _, tokenizer = webshop[:3]
    _, info = env.reset(seed=0)
    (response,), _ = sample_webshop(webshop, info["admissible_commands"], 1, seed=3)
    text = tokenizer.decode(response, skip_special_tokens=True)
    observation, _, _, _, info = env.step(text)
    query = search_query(info["parsed_action"])
    assert query is not None
    assert_free_query(query)
    assert info["is_action_valid"] and info["page"] == "results"
    assert "Page 1 (Total results:" in observation  # the results of the model's search
    assert f"Action 1: 'search[{query}]'" in observation


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained so that ``[<`` and ``>]`` are single tokens, as Qwen's may be."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = "<switch>SWITCH</switch><subgoal>find red shoes</subgoal><action>search[<your query>]"
    backend.train_from_iterator([text + "</action>", "click[buy now]"] * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def test_a_bpe_merge_across_the_placeholder_still_frees_the_query():
    tokenizer = bpe_tokenizer()
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer.encode(SEARCH_TEMPLATE, add_special_tokens=False)
    )
    assert "[<" in tokens  # "[" is not a token of the template as encoded whole
    grammar = ResponseGrammar.from_tokenizer(tokenizer, len(tokenizer), 3, max_query_tokens=5)
    generator = torch.Generator().manual_seed(0)
    commands = [SEARCH_TEMPLATE, "click[buy now]"]
    actions = set()
    for _ in range(20):
        state, response, query_tokens = ResponseState(grammar, commands, None), [], -1
        while state.phase != "done":  # uniform over the allowed tokens
            allowed = state.mask().nonzero().flatten()
            token = allowed[torch.randint(len(allowed), (1,), generator=generator)].item()
            response.append(token)
            query_tokens += state.phase == "query"  # the query's tokens and its "]"
            state.advance(token)
        assert allowed_token_masks(grammar, commands, None, response).shape[0] == len(response)
        action = parse_response(tokenizer.decode(response, skip_special_tokens=True)).action
        query = search_query(action)
        if query is None:
            assert action == "click[buy now]"
        else:
            assert query.strip() != "<your query>" and not set("<>[]") & set(query)
            assert 1 <= query_tokens <= 5  # counted as sampled: random bytes may not decode
        actions.add("click" if query is None else "search")
    assert actions == {"click", "search"}
