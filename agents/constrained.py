"""Constrained decoding of Plan-Execute responses (``--constrained-decoding``, off in the paper).

The grammar of one response, token by token::

    <switch> (KEEP | SWITCH) </switch> <subgoal> SUBGOAL </subgoal> <action> COMMAND </action> EOS

* ``SUBGOAL`` after SWITCH is free text: 1 to ``max_subgoal_tokens`` tokens, none of them special
  or containing ``<``. After KEEP it is forced to repeat the previous turn's subgoal block
  character for character (its raw text, leading space included, re-encoded): the prompt demands a
  verbatim copy, KEEP subgoal tokens get no gradient (§2.3), forcing them costs the policy
  nothing, and an exact copy never draws the consistency penalty (§3), which compares the spans.
* ``COMMAND`` is one of the row's admissible commands, walked in a token trie.

Every tag is a token sequence, so the grammar works with single-token tags (the word-level
tokenizer) and with multi-token tags (Qwen's BPE) alike. The same :class:`ResponseState` drives
sampling (:class:`PlanExecuteLogitsProcessor`, one state per row, advanced token by token) and
training (:func:`allowed_token_masks` replays a response), so the PPO log-probabilities are those of
the distribution the tokens were drawn from: the model's softmax restricted to the allowed tokens.
Forced tokens then have probability 1 and contribute neither gradient nor KL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

KEEP, SWITCH = "KEEP", "SWITCH"
_TEXT_CACHE_LIMIT = 100_000  # encoded commands and subgoals kept by a ResponseGrammar
_TRIE_CACHE_LIMIT = 4_096  # action tries kept by a ResponseGrammar (a few KB each)
_LEAF = -1  # trie key marking the end of an alternative; its value is the alternative's index

Trie = dict[int, "Trie | int"]


def build_trie(sequences: Sequence[Sequence[int]]) -> Trie:
    """A token trie; the leaf key ``-1`` holds the index of the sequence that ends there."""
    root: Trie = {}
    for index, sequence in enumerate(sequences):
        node = root
        for token in sequence:
            node = node.setdefault(token, {})  # type: ignore[assignment]
        node.setdefault(_LEAF, index)
    return root


@dataclass
class ResponseGrammar:
    """Token-level pieces of the Plan-Execute grammar for one tokenizer.

    Build it with :meth:`from_tokenizer`; it is shared by all rows and all turns.
    """

    tokenizer: PreTrainedTokenizerBase
    switch_open: list[int]
    switch_choices: list[list[int]]  # KEEP / SWITCH, each followed by </switch><subgoal>
    subgoal_close: list[int]  # </subgoal><action>
    action_close: list[int]  # </action> EOS
    eos_token_id: int
    free_allowed: torch.Tensor  # bool [vocab]: tokens allowed inside a free subgoal
    vocab_size: int
    max_subgoal_tokens: int
    # Admissible sets and kept subgoals recur turn after turn (and every turn is replayed for the
    # update), so text encodings and action tries are cached; both caches are dropped when full.
    _text_ids: dict[str, list[int]] = field(default_factory=dict, repr=False, compare=False)
    _action_tries: dict[tuple[str, ...], Trie] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, vocab_size: int, max_subgoal_tokens: int
    ) -> ResponseGrammar:
        """Encode the grammar's fixed strings with ``tokenizer``.

        Args:
            tokenizer: The actor's tokenizer; it must define ``eos_token_id``.
            vocab_size: Rows of the model's output layer (``>= len(tokenizer)``); ids at or past
                ``len(tokenizer)`` are never allowed.
            max_subgoal_tokens: Longest free subgoal, in tokens.
        """
        if tokenizer.eos_token_id is None:
            raise ValueError("constrained decoding needs a tokenizer with an eos token")
        if max_subgoal_tokens < 1:
            raise ValueError(f"max_subgoal_tokens must be >= 1, got {max_subgoal_tokens}")

        def encode(text: str) -> list[int]:
            return list(tokenizer.encode(text, add_special_tokens=False))

        after_switch = encode("</switch>") + encode("<subgoal>")
        free_allowed = torch.zeros(vocab_size, dtype=torch.bool)
        free_allowed[: len(tokenizer)] = True
        for token_id in tokenizer.all_special_ids:
            free_allowed[token_id] = False
        vocab = tokenizer.get_vocab()
        # A word-level vocabulary stores " word" next to "word": a free subgoal then uses only the
        # spaced forms, so it decodes to separate words and re-tokenizes to the same ids.
        spaced_words = any(token.startswith(" ") and token.strip() for token in vocab)
        for token, token_id in vocab.items():
            unspaced = spaced_words and not token.startswith(" ")
            if "<" in token or ">" in token or not token.strip() or unspaced:
                free_allowed[token_id] = False
        return cls(
            tokenizer=tokenizer,
            switch_open=encode("<switch>"),
            switch_choices=[encode(KEEP) + after_switch, encode(SWITCH) + after_switch],
            subgoal_close=encode("</subgoal>") + encode("<action>"),
            action_close=encode("</action>") + [tokenizer.eos_token_id],
            eos_token_id=tokenizer.eos_token_id,
            free_allowed=free_allowed,
            vocab_size=vocab_size,
            max_subgoal_tokens=max_subgoal_tokens,
        )

    def encode_commands(self, commands: Sequence[str]) -> list[list[int]]:
        """Token sequences of the admissible commands, each followed by ``</action>`` EOS."""
        return [self._encode(command) + self.action_close for command in dict.fromkeys(commands)]

    def action_trie(self, commands: Sequence[str]) -> Trie:
        """The token trie of the commands' sequences (:meth:`encode_commands`); read-only."""
        key = tuple(commands)
        trie = self._action_tries.get(key)
        if trie is None:
            if len(self._action_tries) > _TRIE_CACHE_LIMIT:
                self._action_tries.clear()
            trie = self._action_tries[key] = build_trie(self.encode_commands(key))
        return trie

    def encode_subgoal(self, subgoal: str) -> list[int]:
        """Token ids of a subgoal text to copy on KEEP, without the closing tag."""
        return list(self._encode(subgoal))

    def _encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (cached; do not modify the list)."""
        ids = self._text_ids.get(text)
        if ids is None:
            if len(self._text_ids) > _TEXT_CACHE_LIMIT:
                self._text_ids.clear()
            ids = self._text_ids[text] = list(self.tokenizer.encode(text, add_special_tokens=False))
        return ids


class ResponseState:
    """Where one row is in the grammar; :meth:`allowed` then :meth:`advance`, token by token.

    Args:
        grammar: The shared grammar.
        commands: The row's admissible commands this turn (at least one).
        keep_copy: The text a KEEP repeats between the subgoal tags: the previous turn's
            ``<subgoal>...</subgoal>`` span without its tags, unstripped; ``None`` lets KEEP
            write freely.
    """

    def __init__(
        self, grammar: ResponseGrammar, commands: Sequence[str], keep_copy: str | None
    ) -> None:
        if not commands:
            raise ValueError("constrained decoding needs at least one admissible command")
        self.grammar = grammar
        self.commands = tuple(commands)
        self.copy = grammar.encode_subgoal(keep_copy) if keep_copy else None
        self.phase = "forced"
        self.forced: list[int] = list(grammar.switch_open)
        self.after_forced = "switch"
        self.node: Trie = {}
        self.free_count = 0

    def _enter(self, phase: str) -> None:
        grammar = self.grammar
        if phase == "switch":
            self.phase, self.node = "trie", build_trie(grammar.switch_choices)
            self.after_trie = "subgoal"
        elif phase == "keep_copy":
            self.phase, self.forced = "forced", list(self.copy or []) + grammar.subgoal_close
            self.after_forced = "action"
        elif phase == "free_subgoal":
            self.phase, self.free_count = "free", 0
        elif phase == "subgoal_close":
            self.phase, self.forced = "forced", list(grammar.subgoal_close[1:])
            self.after_forced = "action"
            if not self.forced:
                self._enter("action")
        elif phase == "action":
            self.phase, self.node = "trie", grammar.action_trie(self.commands)
            self.after_trie = "done"
        elif phase == "done":
            self.phase = "done"
        else:  # pragma: no cover - internal
            raise AssertionError(phase)

    def allowed(self) -> list[int] | None:
        """Allowed next token ids, or ``None`` for a free subgoal position (see :meth:`mask`)."""
        if self.phase == "forced":
            return [self.forced[0]]
        if self.phase == "trie":
            return [token for token in self.node if token != _LEAF]
        if self.phase == "free":
            return None
        return [self.grammar.eos_token_id]

    def mask(self) -> torch.Tensor:
        """Bool ``[vocab]``: the allowed next tokens."""
        allowed = self.allowed()
        if allowed is not None:
            mask = torch.zeros(self.grammar.vocab_size, dtype=torch.bool)
            mask[allowed] = True
            return mask
        close = self.grammar.subgoal_close[0]
        if self.free_count >= self.grammar.max_subgoal_tokens:
            mask = torch.zeros(self.grammar.vocab_size, dtype=torch.bool)
        else:
            mask = self.grammar.free_allowed.clone()
        if self.free_count >= 1:
            mask[close] = True
        return mask

    def forced_tail(self, token: int) -> list[int] | None:
        """The tokens that must follow ``token`` through EOS, or ``None`` while one is a choice.

        Forced tokens are sampled with probability 1, so a caller knows the whole response as
        soon as this is not ``None`` (``[]`` when ``token`` was the EOS). Looked up in the action
        trie only, without consuming ``token``: every earlier phase still has the action ahead.
        """
        if self.phase != "trie" or self.after_trie != "done":
            return None
        node = self.node.get(token)
        tail: list[int] = []
        while isinstance(node, dict) and _LEAF not in node:
            if len(node) != 1:
                return None
            ((token, node),) = node.items()
            tail.append(token)
        return tail

    def advance(self, token: int) -> None:
        """Consume one generated token (it must be allowed)."""
        if self.phase == "forced":
            self.forced.pop(0)
            if not self.forced:
                self._enter(self.after_forced)
        elif self.phase == "trie":
            self.node = self.node[token]  # type: ignore[assignment]
            if _LEAF in self.node:
                choice = self.node[_LEAF]
                if self.after_trie == "subgoal":
                    keep = choice == 0
                    self._enter("keep_copy" if keep and self.copy else "free_subgoal")
                else:
                    self._enter(self.after_trie)
        elif self.phase == "free":
            if token == self.grammar.subgoal_close[0] and self.free_count >= 1:
                self._enter("subgoal_close")
            else:
                self.free_count += 1


class PlanExecuteLogitsProcessor(LogitsProcessor):
    """Masks each row's logits to the Plan-Execute grammar during ``model.generate``.

    Args:
        states: One :class:`ResponseState` per row of the generation batch, fresh.
    """

    def __init__(self, states: Sequence[ResponseState]) -> None:
        self.states = list(states)
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Advance each row with its last sampled token, then mask disallowed logits."""
        if self.started:
            for state, token in zip(self.states, input_ids[:, -1].tolist(), strict=True):
                if state.phase != "done":
                    state.advance(token)
        self.started = True
        masks = torch.stack([state.mask() for state in self.states]).to(scores.device)
        if masks.shape[1] < scores.shape[1]:  # padded output layer
            masks = torch.nn.functional.pad(masks, (0, scores.shape[1] - masks.shape[1]))
        return scores.masked_fill(~masks[:, : scores.shape[1]], float("-inf"))


def allowed_token_masks(
    grammar: ResponseGrammar,
    commands: Sequence[str],
    keep_copy: str | None,
    response_ids: Sequence[int],
) -> torch.Tensor:
    """Replay a sampled response: bool ``[len(response_ids), vocab]`` of the allowed tokens.

    Raises:
        ValueError: If the response leaves the grammar (it was not sampled under it).
    """
    state = ResponseState(grammar, commands, keep_copy)
    masks = torch.zeros(len(response_ids), grammar.vocab_size, dtype=torch.bool)
    for position, token in enumerate(response_ids):
        masks[position] = state.mask()
        if not masks[position, token]:
            raise ValueError(f"token {token} at position {position} is outside the grammar")
        if state.phase == "done":
            continue
        state.advance(token)
    return masks
