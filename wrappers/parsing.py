"""The one parser of HiPER's Plan-Execute responses (``<switch>``, ``<subgoal>``, ``<action>``).

Environment wrappers and learners share :func:`parse_response`, so the action sent to the
environment, the subgoal written into the next prompt, the format flag used for the invalid-output
penalty and the token spans used for the hierarchical loss masks all come from the same reading of
a response.

Two sets of rules from the authors' code are reproduced here (see ``specs/hiper-method.md``):

* **Environment side** (§1.3, ``alfworld_projection_options`` / ``webshop_projection_options``):
  the lower-cased action (or a tail-of-response fallback), the stored switch value, the subgoal in
  force and the format-valid flag.
* **Training side** (§1.4, ``make_hae_masks_and_switch``): the segment-boundary flag and the
  character spans of the three blocks, tags included (``include_tags_mask=True``).

The two sides disagree on purpose in a few corner cases (an empty ``<switch></switch>`` is
format-invalid for the environment but a KEEP for the trainer); each field below says which side
it follows.

Where the spec is silent, these choices are made (and tested in ``tests/wrappers/test_parsing.py``):

* A block is the first opening tag and the first closing tag *after* it; an opening tag with no
  closing tag counts as a missing block.
* The tail fallback is not stripped (the authors slice the lower-cased response).
* Missing switch tags store the flavour's invalid switch value, like any other invalid switch.
* A garbage switch (neither KEEP nor SWITCH) is a segment boundary for the trainer, so the subgoal
  in force becomes the written ``<subgoal>`` text, although WebShop stores ``"KEEP"`` as its switch.
* KEEP copies the current subgoal (§1.1: o_t = o_{t-1}); what the model wrote stays available in
  ``subgoal_block`` (the trainer's KEEP-consistency penalty compares it with the previous turn).
* SWITCH without a ``<subgoal>`` block leaves the subgoal unchanged (and is format-invalid).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Flavours and their §1.3 constants: (tail length of the action fallback, stored switch value
#: when the switch content is neither KEEP nor SWITCH).
_FLAVOR_TAIL_LENGTH: dict[str, int] = {"alfworld": 30, "webshop": 20}
_FLAVOR_INVALID_SWITCH: dict[str, str] = {"alfworld": "", "webshop": "KEEP"}

#: §1.3 rule 2, missing switch tags: ALFWorld stores the last 30 characters of the action string
#: as the subgoal; WebShop stores the literal "None".
_MISSING_SWITCH_SUBGOAL_CHARS = 30
_WEBSHOP_MISSING_SWITCH_SUBGOAL = "None"

#: §1.3 rule 3: any CJK Unified Ideograph makes the response format-invalid.
_CJK_PATTERN = re.compile(r"[\u4e00-\u9fff]")

#: §1.4: characters that the trainer's closing-tag variants (``]</subgoal>``, ``.</subgoal>``,
#: ``)</subgoal>``, same for ``</action>``) swallow just before the closing tag.
_CLOSER_PREFIXES: dict[str, str] = {"switch": "", "subgoal": "].)", "action": "].)"}

FLAVORS: tuple[str, ...] = tuple(_FLAVOR_TAIL_LENGTH)

#: Response styles: HiPER's three blocks, or a flat (ReAct-style) response with ``<action>`` only.
STYLES: tuple[str, ...] = ("plan_execute", "flat")


@dataclass(frozen=True)
class Block:
    r"""One ``<tag>...</tag>`` block of a response.

    Attributes:
        text: The inner text, stripped (not lower-cased): what the environment side reads.
        start: Offset of the opening tag, so ``response[start:end]`` is the whole block.
        end: Offset just past the closing tag. The §1.4 closing-tag variants (``]</subgoal>``,
            ``.</subgoal>``, ``)</subgoal>`` and their ``\n`` forms) end at the same offset as the
            plain tag: the variant starts one character earlier, and a ``\n`` form never wins
            because the trainer takes the earliest match and lists the short form first.
        inner_start: Offset of the first character after the opening tag.
        inner_end: Offset where the trainer's matched closing tag starts: the plain closing tag,
            or one character earlier when ``]``, ``.`` or ``)`` precedes ``</subgoal>`` or
            ``</action>``. ``response[inner_start:inner_end]`` is the trainer's tag-free span
            (``include_tags_mask=False``).
    """

    text: str
    start: int
    end: int
    inner_start: int
    inner_end: int


@dataclass(frozen=True)
class ParsedResponse:
    """What one Plan-Execute response means to the environment and to the trainer.

    Attributes:
        action: The command sent to the environment (§1.3 rule 1): the lower-cased, stripped text
            of the first ``<action>`` block, or, when that block is missing or unclosed, the last
            ``tail_length`` characters of the lower-cased response (not stripped).
        switch: The stored switch value (§1.3 rule 2): ``"KEEP"`` or ``"SWITCH"``, else the
            flavour's invalid value (``""`` for ALFWorld, ``"KEEP"`` for WebShop).
        subgoal: The subgoal in force after this turn, which the next prompt shows as the current
            subgoal. KEEP (or an empty switch) copies ``current_subgoal``; SWITCH or any other
            switch text takes the ``<subgoal>`` text; missing switch tags give the authors'
            fallback (ALFWorld: the last 30 characters of the action; WebShop: ``"None"``).
        format_valid: ``False`` when any §1.3 rule flags the response (missing or unclosed
            blocks, a switch outside {KEEP, SWITCH}, a CJK character). Admissibility is not
            checked here.
        is_new_segment_marker: The trainer's boundary flag (§1.4): the stripped, upper-cased
            switch text is neither ``""`` nor ``"KEEP"``; missing or empty counts as KEEP and any
            other text, even garbage, as a new segment. Turn 0 starts a segment whatever this says:
            that is the caller's job (see :func:`segment_starts`).
        switch_block: The first ``<switch>`` block, or ``None`` if missing or unclosed.
        subgoal_block: The first ``<subgoal>`` block, or ``None``.
        action_block: The first ``<action>`` block, or ``None`` (the trainer then puts the whole
            response under the action mask).
    """

    action: str
    switch: str
    subgoal: str
    format_valid: bool
    is_new_segment_marker: bool
    switch_block: Block | None
    subgoal_block: Block | None
    action_block: Block | None


def _find_block(response: str, tag: str) -> Block | None:
    """The first ``<tag>`` and the first closing tag after it, or ``None`` if either is missing."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    start = response.find(open_tag)
    if start < 0:
        return None
    inner_start = start + len(open_tag)
    close_at = response.find(close_tag, inner_start)
    if close_at < 0:
        return None
    # The trainer's variant closers ("]</action>" ...) begin one character earlier.
    inner_end = close_at
    if close_at > inner_start and response[close_at - 1] in _CLOSER_PREFIXES[tag]:
        inner_end = close_at - 1
    return Block(
        text=response[inner_start:close_at].strip(),
        start=start,
        end=close_at + len(close_tag),
        inner_start=inner_start,
        inner_end=inner_end,
    )


def _subgoal_in_force(
    switch_block: Block | None,
    subgoal_block: Block | None,
    is_new_segment_marker: bool,
    action: str,
    current_subgoal: str | None,
    flavor: str,
) -> str:
    """The subgoal the next prompt shows, following §1.1 (KEEP copies) and §1.3 rule 2."""
    if switch_block is None:
        # §1.3: the authors' projection stores a stand-in subgoal when the switch is missing.
        if flavor == "alfworld":
            return action[-_MISSING_SWITCH_SUBGOAL_CHARS:]
        return _WEBSHOP_MISSING_SWITCH_SUBGOAL
    if is_new_segment_marker and subgoal_block is not None:
        return subgoal_block.text
    if current_subgoal is not None:
        return current_subgoal
    # KEEP at the very first turn has nothing to copy: take what the model wrote.
    return subgoal_block.text if subgoal_block is not None else ""


def parse_response(
    response: str,
    *,
    current_subgoal: str | None = None,
    flavor: str = "alfworld",
    style: str = "plan_execute",
    tail_length: int | None = None,
) -> ParsedResponse:
    """Parse one Plan-Execute response with the authors' exact rules.

    Args:
        response: The decoded response text (special tokens skipped).
        current_subgoal: The subgoal in force before this turn (``None`` at turn 0). KEEP copies it.
        flavor: ``"alfworld"`` or ``"webshop"``; selects the fallback tail length, the stored
            invalid switch value and the missing-switch subgoal (§1.3).
        style: ``"plan_execute"`` applies every rule above. ``"flat"`` reads a baseline's
            ReAct-style response: only the ``<action>`` block and the CJK rule decide
            ``format_valid``, ``switch`` is ``""``, the subgoal stays ``current_subgoal`` (or
            ``""``) and no turn is marked as a boundary. The blocks are still reported.
        tail_length: Characters of the lower-cased response sent as the action when the
            ``<action>`` block is missing; ``None`` uses the flavour's 30 (ALFWorld) or 20
            (WebShop).

    Returns:
        The parsed response. Never raises on malformed text: problems clear ``format_valid``.

    Raises:
        ValueError: If ``flavor`` or ``style`` is unknown or ``tail_length`` is not positive.
        TypeError: If ``response`` is not a string.

    Example:
        >>> parsed = parse_response(
        ...     "<switch>SWITCH</switch><subgoal>find a mug</subgoal><action>Go to Shelf 1</action>"
        ... )
        >>> parsed.action, parsed.switch, parsed.subgoal, parsed.format_valid
        ('go to shelf 1', 'SWITCH', 'find a mug', True)
        >>> parsed.action_block.start, parsed.action_block.end
        (52, 82)
        >>> parse_response("<switch>keep</switch><subgoal>x</subgoal><action>look</action>",
        ...                current_subgoal="find a mug").subgoal
        'find a mug'
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    if flavor not in _FLAVOR_TAIL_LENGTH:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {FLAVORS}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if tail_length is None:
        tail_length = _FLAVOR_TAIL_LENGTH[flavor]
    if tail_length <= 0:
        raise ValueError(f"tail_length must be positive, got {tail_length}")

    switch_block = _find_block(response, "switch")
    subgoal_block = _find_block(response, "subgoal")
    action_block = _find_block(response, "action")
    format_valid = True

    # §1.3 rule 1: lower-cased action, or the lower-cased tail of the response.
    if action_block is not None:
        action = action_block.text.lower()
    else:
        action = response.lower()[-tail_length:]
        format_valid = False

    if style == "flat":
        return ParsedResponse(
            action=action,
            switch="",
            subgoal=current_subgoal or "",
            format_valid=format_valid and not _CJK_PATTERN.search(response),
            is_new_segment_marker=False,
            switch_block=switch_block,
            subgoal_block=subgoal_block,
            action_block=action_block,
        )

    # §1.3 rule 2: the stored switch value and the validity of the switch/subgoal blocks.
    switch_text = switch_block.text.upper() if switch_block is not None else ""
    if switch_block is None:
        switch = _FLAVOR_INVALID_SWITCH[flavor]
        format_valid = False
    elif switch_text in ("KEEP", "SWITCH"):
        switch = switch_text
    else:
        switch = _FLAVOR_INVALID_SWITCH[flavor]
        format_valid = False
    if switch_block is not None and subgoal_block is None:
        format_valid = False

    # §1.3 rule 3: CJK characters anywhere.
    if _CJK_PATTERN.search(response):
        format_valid = False

    # §1.4: missing or empty switch reads as KEEP; anything else that is not KEEP is a boundary.
    is_new_segment_marker = switch_text not in ("", "KEEP")

    return ParsedResponse(
        action=action,
        switch=switch,
        subgoal=_subgoal_in_force(
            switch_block, subgoal_block, is_new_segment_marker, action, current_subgoal, flavor
        ),
        format_valid=format_valid,
        is_new_segment_marker=is_new_segment_marker,
        switch_block=switch_block,
        subgoal_block=subgoal_block,
        action_block=action_block,
    )


def segment_starts(is_new_segment_markers: Sequence[bool]) -> list[int]:
    """Turn indices that start a segment (§1.4): turn 0, then every marked turn.

    Args:
        is_new_segment_markers: ``ParsedResponse.is_new_segment_marker`` for turns ``0..T-1``.

    Returns:
        The sorted boundary positions ``B = [0] + [t >= 1 with a marker]`` (empty if ``T == 0``).

    Example:
        >>> segment_starts([False, False, True, False, True])
        [0, 2, 4]
    """
    if not is_new_segment_markers:
        return []
    return [0] + [turn for turn, marked in enumerate(is_new_segment_markers) if turn and marked]


def env_flavor(env: Any) -> str:
    """The parsing and prompt flavour of an env: ``"webshop"`` if its id or class says WebShop.

    Args:
        env: A Gymnasium env, possibly wrapped.

    Returns:
        ``"webshop"`` when the registered id or the unwrapped class name contains "webshop"
        (case-insensitive), else ``"alfworld"``.
    """
    spec = getattr(env, "spec", None)
    names = [getattr(spec, "id", "") or "", type(getattr(env, "unwrapped", env)).__name__]
    return "webshop" if any("webshop" in name.lower() for name in names) else "alfworld"
