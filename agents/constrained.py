"""Constrained decoding of Plan-Execute responses (``--constrained-decoding``, off in the paper).

The grammar of one response, token by token::

    <switch> (KEEP | SWITCH) </switch> <subgoal> SUBGOAL </subgoal> <action> COMMAND </action> EOS

* ``SUBGOAL`` after SWITCH is free text: 1 to ``max_subgoal_tokens`` tokens, none of them special
  or containing ``<``. After KEEP it is forced to repeat the previous turn's subgoal block
  character for character (its raw text, leading space included, re-encoded): the prompt demands a
  verbatim copy, KEEP subgoal tokens get no gradient (§2.3), forcing them costs the policy
  nothing, and an exact copy never draws the consistency penalty (§3), which compares the spans.
* ``COMMAND`` is one of the row's admissible commands, walked in a token trie. A *template*
  command, one whose bracket content is a ``<...>`` placeholder (:data:`TEMPLATE_COMMAND`, e.g.
  WebShop's ``search[<your query>]``), stands for any command with the model's own words there:
  the trie holds its prefix through ``[``, then the model writes a free query of 1 to
  ``max_query_tokens`` tokens (a free subgoal's tokens less those containing ``[`` or ``]``), and
  ``]`` ``</action>`` EOS are forced. Writing the placeholder literally would be a useless search.
  Other commands still branch off the trie as before (a page may offer a template and clicks),
  but one that starts with a template's prefix tokens is subsumed by the template: the query is
  free from there.

Every tag is a token sequence, so the grammar works with single-token tags (the word-level
tokenizer) and with multi-token tags (Qwen's BPE) alike. The same :class:`ResponseState` drives
sampling (:class:`PlanExecuteLogitsProcessor`, one state per row, advanced token by token) and
training (:func:`allowed_token_masks` replays a response), so the PPO log-probabilities are those of
the distribution the tokens were drawn from: the model's softmax restricted to the allowed tokens.
Forced tokens then have probability 1 and contribute neither gradient nor KL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

KEEP, SWITCH = "KEEP", "SWITCH"
_TEXT_CACHE_LIMIT = 100_000  # encoded commands and subgoals kept by a ResponseGrammar
_TRIE_CACHE_LIMIT = 4_096  # action tries kept by a ResponseGrammar (a few KB each)
_LEAF = -1  # trie key marking the end of an alternative; its value is the alternative's index
_QUERY = -2  # trie key marking where a template's free query starts; its value is the index too
#: Default longest free query of a template command, in tokens (a WebShop query is a few words).
DEFAULT_MAX_QUERY_TOKENS = 16
#: A template command: its bracket content is a ``<...>`` placeholder, as in WebShop's
#: ``search[<your query>]``; the ``prefix`` group is the text through ``[``.
TEMPLATE_COMMAND = re.compile(r"(?P<prefix>[^\[\]]*\[)<[^<>\[\]]*>\]")

Trie = dict[int, "Trie | int"]


def build_trie(sequences: Sequence[Sequence[int]]) -> Trie:
    """A token trie; the leaf key ``-1`` holds the index of the sequence that ends there.

    A sequence may end with a negative marker instead (``-2``: a free query starts here, see
    :meth:`ResponseGrammar.encode_commands`); that key then holds the index in place of ``-1``.
    """
    root: Trie = {}
    for index, sequence in enumerate(sequences):
        node = root
        for token in sequence:
            if token < 0:
                node.setdefault(token, index)
                break
            node = node.setdefault(token, {})  # type: ignore[assignment]
        else:
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
    query_allowed: torch.Tensor  # bool [vocab]: tokens allowed inside a template's free query
    query_close: list[int]  # "]", which ends a template's query
    vocab_size: int
    max_subgoal_tokens: int
    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS
    # Admissible sets and kept subgoals recur turn after turn (and every turn is replayed for the
    # update), so text encodings and action tries are cached; both caches are dropped when full.
    _text_ids: dict[str, list[int]] = field(default_factory=dict, repr=False, compare=False)
    _action_tries: dict[tuple[str, ...], Trie] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        max_subgoal_tokens: int,
        max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS,
    ) -> ResponseGrammar:
        """Encode the grammar's fixed strings with ``tokenizer``.

        Args:
            tokenizer: The actor's tokenizer; it must define ``eos_token_id``.
            vocab_size: Rows of the model's output layer (``>= len(tokenizer)``); ids at or past
                ``len(tokenizer)`` are never allowed.
            max_subgoal_tokens: Longest free subgoal, in tokens.
            max_query_tokens: Longest free query of a template command such as
                ``search[<your query>]``, in tokens.
        """
        if tokenizer.eos_token_id is None:
            raise ValueError("constrained decoding needs a tokenizer with an eos token")
        if max_subgoal_tokens < 1:
            raise ValueError(f"max_subgoal_tokens must be >= 1, got {max_subgoal_tokens}")
        if max_query_tokens < 1:
            raise ValueError(f"max_query_tokens must be >= 1, got {max_query_tokens}")

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
        # A query holds no bracket: "]" is what ends it, and WebShop reads an action as
        # "name[argument]" with a greedy regex, which a "[" in the query would break.
        query_allowed = free_allowed.clone()
        for token, token_id in vocab.items():
            if "[" in token or "]" in token:
                query_allowed[token_id] = False
        return cls(
            tokenizer=tokenizer,
            switch_open=encode("<switch>"),
            switch_choices=[encode(KEEP) + after_switch, encode(SWITCH) + after_switch],
            subgoal_close=encode("</subgoal>") + encode("<action>"),
            action_close=encode("</action>") + [tokenizer.eos_token_id],
            eos_token_id=tokenizer.eos_token_id,
            free_allowed=free_allowed,
            query_allowed=query_allowed,
            query_close=encode("]"),
            vocab_size=vocab_size,
            max_subgoal_tokens=max_subgoal_tokens,
            max_query_tokens=max_query_tokens,
        )

    def encode_commands(self, commands: Sequence[str]) -> list[list[int]]:
        """Token sequences of the admissible commands, each followed by ``</action>`` EOS.

        A template command (:data:`TEMPLATE_COMMAND`) is its prefix through ``[`` then the marker
        ``-2`` where the free query starts. The prefix is encoded alone: a BPE tokenizer may
        merge ``[`` with the placeholder's ``<``, and the query must start on a token boundary.
        """
        sequences = []
        for command in dict.fromkeys(commands):
            template = TEMPLATE_COMMAND.fullmatch(command)
            if template is not None:
                sequences.append(self._encode(template["prefix"]) + [_QUERY])
            else:
                sequences.append(self._encode(command) + self.action_close)
        return sequences

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
        self.free_count = 0  # tokens of the free subgoal so far
        self.query_count = 0  # tokens of a template's free query so far

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
        elif phase == "query":
            self.phase, self.query_count = "query", 0
        elif phase == "query_close":
            self.phase, self.forced = "forced", grammar.query_close[1:] + grammar.action_close
            self.after_forced = "done"
        elif phase == "done":
            self.phase = "done"
        else:  # pragma: no cover - internal
            raise AssertionError(phase)

    def allowed(self) -> list[int] | None:
        """Allowed next token ids, or ``None`` at a free subgoal or query (see :meth:`mask`)."""
        if self.phase == "forced":
            return [self.forced[0]]
        if self.phase == "trie":
            return [token for token in self.node if token >= 0]
        if self.phase in ("free", "query"):
            return None
        return [self.grammar.eos_token_id]

    def mask(self) -> torch.Tensor:
        """Bool ``[vocab]``: the allowed next tokens."""
        allowed = self.allowed()
        grammar = self.grammar
        if allowed is not None:
            mask = torch.zeros(grammar.vocab_size, dtype=torch.bool)
            mask[allowed] = True
            return mask
        if self.phase == "query":
            return _free_text_mask(
                grammar.query_allowed,
                grammar.query_close[0],
                self.query_count,
                grammar.max_query_tokens,
            )
        return _free_text_mask(
            grammar.free_allowed,
            grammar.subgoal_close[0],
            self.free_count,
            grammar.max_subgoal_tokens,
        )

    def forced_tail(self, token: int) -> list[int] | None:
        """The tokens that must follow ``token`` through EOS, or ``None`` while one is a choice.

        Forced tokens are sampled with probability 1, so a caller knows the whole response as
        soon as this is not ``None`` (``[]`` when ``token`` was the EOS). Looked up without
        consuming ``token``, in the action trie or in a template's query: every earlier phase
        still has the action ahead, and a query is known once its ``]`` is written.
        """
        if self.phase == "query":
            if token == self.grammar.query_close[0] and self.query_count >= 1:
                return self.grammar.query_close[1:] + self.grammar.action_close
            return None
        if self.phase != "trie" or self.after_trie != "done":
            return None
        node = self.node.get(token)
        tail: list[int] = []
        while isinstance(node, dict) and _LEAF not in node:
            if _QUERY in node or len(node) != 1:
                return None  # a query still to be written, or commands still to choose from
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
            if _QUERY in self.node:
                self._enter("query")
            elif _LEAF in self.node:
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
        elif self.phase == "query":
            if token == self.grammar.query_close[0] and self.query_count >= 1:
                self._enter("query_close")
            else:
                self.query_count += 1


def _free_text_mask(allowed: torch.Tensor, close: int, count: int, limit: int) -> torch.Tensor:
    """Free text after ``count`` tokens: ``allowed`` below ``limit``, ``close`` from one on."""
    mask = allowed.clone() if count < limit else torch.zeros_like(allowed)
    if count >= 1:
        mask[close] = True
    return mask


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
