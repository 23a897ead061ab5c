"""The text side of a turn: prompt token ids, and what a sampled response says and where.

A turn's prompt goes through the tokenizer's chat template as one user message
(:func:`chat_prompt_ids`). A sampled response is decoded, parsed by the Plan-Execute parser, and
its blocks mapped onto its tokens (:func:`read_response`): the block masks of §2.3 and the low-value
read-out index of §2.2. Pure functions of the tokenizer and the ids, so they run wherever the env
runs (see :mod:`hiper_gym.agents.env_workers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hiper_gym.wrappers import ParsedResponse, parse_response
from transformers import PreTrainedTokenizerBase


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt_text: str, max_prompt_tokens: int
) -> list[int]:
    """Token ids of a prompt sent as one user message through the chat template.

    Keeps the last ``max_prompt_tokens`` tokens.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt_text}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer.encode(text, add_special_tokens=False)[-max_prompt_tokens:])


def response_token_offsets(
    tokenizer: PreTrainedTokenizerBase, response_ids: Sequence[int]
) -> list[tuple[int, int]]:
    """Character span of each response token in the decoded response (special tokens skipped).

    Decodes token by token; when the pieces do not add up to the whole decode (a multi-byte
    character split across byte-level tokens), falls back to decoding growing prefixes.
    """
    pieces = [tokenizer.decode([token], skip_special_tokens=True) for token in response_ids]
    full = tokenizer.decode(list(response_ids), skip_special_tokens=True)
    if "".join(pieces) != full:
        ends = [
            len(tokenizer.decode(list(response_ids[: i + 1]), skip_special_tokens=True))
            for i in range(len(response_ids))
        ]
    else:
        ends = np.cumsum([len(piece) for piece in pieces]).tolist()
    starts = [0] + ends[:-1]
    return list(zip(starts, ends, strict=True))


def block_token_mask(offsets: Sequence[tuple[int, int]], start: int, end: int) -> np.ndarray:
    """Tokens whose characters overlap ``[start, end)``."""
    return np.array([s < end and e > start for s, e in offsets], dtype=bool)


def last_token_at(offsets: Sequence[tuple[int, int]], char_end: int) -> int:
    """Index of the token holding character ``char_end - 1`` (-1 if none)."""
    for index, (start, end) in enumerate(offsets):
        if start < char_end <= end:
            return index
    return -1


@dataclass(frozen=True)
class ResponseLayout:
    """Block masks and the low-value read-out index of one response (see :class:`Turn`)."""

    switch_mask: np.ndarray
    subgoal_mask: np.ndarray
    action_mask: np.ndarray
    low_value_index: int


def response_layout(
    tokenizer: PreTrainedTokenizerBase, response_ids: Sequence[int], parsed: ParsedResponse
) -> ResponseLayout:
    """Map the parser's block spans onto the response tokens (§1.4, §2.2).

    Tag tokens are included. A missing ``<action>`` block puts every response token under the
    action mask (the authors' fallback). The low value is read at the last token of
    ``</subgoal>``, else of ``</switch>``, else at the last prompt token (-1).
    """
    offsets = response_token_offsets(tokenizer, response_ids)
    empty = np.zeros(len(offsets), dtype=bool)

    def mask_of(block: Any) -> np.ndarray:
        return empty.copy() if block is None else block_token_mask(offsets, block.start, block.end)

    action_mask = (
        np.ones(len(offsets), dtype=bool)
        if parsed.action_block is None
        else mask_of(parsed.action_block)
    )
    low_value_index = -1
    for block in (parsed.subgoal_block, parsed.switch_block):
        if block is not None:
            low_value_index = last_token_at(offsets, block.end)
            break
    return ResponseLayout(
        switch_mask=mask_of(parsed.switch_block),
        subgoal_mask=mask_of(parsed.subgoal_block),
        action_mask=action_mask,
        low_value_index=low_value_index,
    )


@dataclass(frozen=True)
class ResponseReading:
    """A sampled response decoded and parsed.

    The fields a :class:`~hiper_gym.agents.rollout.Turn` takes from its response (see there).
    """

    text: str
    layout: ResponseLayout
    is_switch: bool
    has_switch_block: bool
    subgoal_span: str | None
    format_valid: bool


def read_response(
    tokenizer: PreTrainedTokenizerBase,
    response_ids: Sequence[int],
    *,
    current_subgoal: str | None,
    flavor: str,
    style: str,
) -> ResponseReading:
    """Decode a response, parse it as the env's wrapper does, and lay its blocks onto the tokens.

    The text is decoded with special tokens skipped: what the env receives.

    Args:
        tokenizer: The actor's tokenizer.
        response_ids: The sampled response.
        current_subgoal: The subgoal in force before the turn (a KEEP keeps it).
        flavor: The env's prompt flavour (``"alfworld"``, ``"webshop"``).
        style: The env's response style (``"plan_execute"``).
    """
    text = tokenizer.decode(list(response_ids), skip_special_tokens=True)
    parsed = parse_response(text, current_subgoal=current_subgoal, flavor=flavor, style=style)
    subgoal_span = None
    if parsed.subgoal_block is not None:
        subgoal_span = text[parsed.subgoal_block.start : parsed.subgoal_block.end]
    return ResponseReading(
        text=text,
        layout=response_layout(tokenizer, response_ids, parsed),
        is_switch=parsed.is_new_segment_marker,
        has_switch_block=parsed.switch_block is not None,
        subgoal_span=subgoal_span,
        format_valid=parsed.format_valid,
    )
