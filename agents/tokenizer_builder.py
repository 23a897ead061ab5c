r"""A word-level tokenizer built offline from an environment's vocabulary.

The tiny CPU model of ``hiper-gym train`` needs a tokenizer but may not download one. This module
builds a Hugging Face fast tokenizer from a word list (the words the environment writes, the prompt
template's words, digits and punctuation) with the properties the learner relies on:

* **Round trip.** Every word is stored twice, bare and with its leading space (``"go"``,
  ``" go"``), whitespace characters are tokens and the decoder concatenates, so
  ``decode(encode(text)) == text`` for any text made of known words: the Plan-Execute parser reads
  exactly what the model wrote. Unknown words become ``[UNK]``.
* **Offsets.** ``return_offsets_mapping=True`` works, so parser character spans map to tokens.
* **Single-token tags.** ``<switch>``, ``</switch>``, ``<subgoal>``, ``</subgoal>``, ``<action>``,
  ``</action>`` are added tokens, so the block masks and constrained decoding are exact.
* **Chat template.** A ChatML template (``<|im_start|>role\n...<|im_end|>``) like Qwen's, so the
  prompt pipeline is the same as with a real checkpoint.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

#: A run of letters, a run of digits or one other non-space character, each with an optional
#: leading space; or one whitespace character. ``cabinet_2`` is three words, so identifiers in
#: game files (``Drawer_bar_2``) yield the words the observations use.
WORD_PATTERN = r" ?[A-Za-z]+| ?[0-9]+| ?[^A-Za-z0-9\s]|\s"
_WORD_REGEX = re.compile(r"[A-Za-z]+|[0-9]+|[^A-Za-z0-9\s]")

PAD_TOKEN = "<pad>"
UNK_TOKEN = "[UNK]"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"

#: The Plan-Execute block tags, added as single tokens (not special: decoding keeps them).
BLOCK_TAGS: tuple[str, ...] = (
    "<switch>",
    "</switch>",
    "<subgoal>",
    "</subgoal>",
    "<action>",
    "</action>",
)

#: ChatML, the format of Qwen2.5's template without its default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Words every Plan-Execute tokenizer needs whatever the environment: the switch values, the
#: chat roles and numbers up to 99 (ALFWorld numbers its objects, prompts count steps).
BASE_WORDS: tuple[str, ...] = (
    ("KEEP", "SWITCH", "None", "user", "assistant", "system")
    + tuple(str(number) for number in range(100))
    + tuple(string.ascii_letters)
)


def split_words(text: str) -> list[str]:
    """The words and punctuation characters of ``text``, without whitespace.

    Example:
        >>> split_words("Your task is to: put a mug 1 in cabinet_2.")
        ['Your', 'task', 'is', 'to', ':', 'put', 'a', 'mug', '1', 'in', 'cabinet', '_', '2', '.']
    """
    return _WORD_REGEX.findall(text)


def collect_words(texts: Iterable[str]) -> set[str]:
    """The set of words and punctuation characters occurring in ``texts``."""
    words: set[str] = set()
    for text in texts:
        words.update(split_words(text))
    return words


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Build a word-level fast tokenizer whose vocabulary covers ``texts``.

    Args:
        texts: Any text the model will read or write: observations, admissible commands, task
            descriptions, the prompt template. Only its set of words matters.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad, unk and eos (``<|im_end|>``) set, the block tags as
        single tokens and a ChatML chat template. Its vocabulary order is deterministic (sorted),
        so the same texts always give the same token ids.

    Example:
        >>> tokenizer = build_word_tokenizer(["go to cabinet 1"])
        >>> ids = tokenizer.encode("<action>go to cabinet 1</action>")
        >>> tokenizer.convert_ids_to_tokens(ids)
        ['<action>', 'go', ' to', ' cabinet', ' 1', '</action>']
        >>> tokenizer.decode(ids)
        '<action>go to cabinet 1</action>'
    """
    words = collect_words(texts)
    # Actions are lower-cased by the parser (§1.3): every word must exist in lower case too.
    words |= {word.lower() for word in words} | set(BASE_WORDS) | set(string.punctuation)
    vocab: dict[str, int] = {}
    for token in (PAD_TOKEN, UNK_TOKEN, IM_START_TOKEN, IM_END_TOKEN):
        vocab[token] = len(vocab)
    for whitespace in (" ", "\n", "\t"):
        vocab[whitespace] = len(vocab)
    for word in sorted(words):
        for variant in (word, " " + word):
            vocab.setdefault(variant, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=IM_END_TOKEN,
        additional_special_tokens=[IM_START_TOKEN],
        padding_side="left",
    )
    tokenizer.add_tokens(list(BLOCK_TAGS))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
