r"""BM25 product search on bm25s, with upstream's (pyserini's) parameters.

Upstream searches a Lucene index (k1=0.9, b=0.4, StandardTokenizer, 33 English stop words, Porter
stemmer) and returns at most 50 matching documents. Here: lower-casing, ``\b\w+\b`` tokens
(1-character tokens such as sizes are kept), the same 33 stop words, PyStemmer's Porter stemmer,
bm25s's Lucene BM25 variant, only documents with a positive score, and ties broken by catalogue
order (Lucene's doc-id order). Differences with Lucene that remain: ``7.5`` is two tokens here, one
in Lucene; Lucene also strips a trailing possessive ``'s`` (here ``men's`` gives ``men`` and ``s``,
``s`` being a 1-character token that rarely matters).

Large indexes are cached on disk (bm25s ``save``/``load``) under
``~/.cache/hiper-gym/webshop/<key>``, keyed by the catalogue fingerprint, so they are built once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from hiper_gym.webshop.catalogue import Catalogue, search_document

K1 = 0.9
B = 0.4
SEARCH_RETURN_N = 50
PRODUCT_WINDOW = 10
#: Catalogues at least this large get their index cached on disk.
CACHE_MIN_PRODUCTS = 2000
TOKENIZER_VERSION = "v1-porter-w+"
VOCAB_FILE = "hiper_vocab.json"
_TOKEN = re.compile(r"(?u)\b\w+\b")
_STOP_WORDS = frozenset(STOPWORDS_EN)
_STOP = -1


def default_cache_dir() -> Path:
    """``$HIPER_GYM_CACHE/webshop``, else ``${XDG_CACHE_HOME:-~/.cache}/hiper-gym/webshop``."""
    root = os.environ.get("HIPER_GYM_CACHE")
    if root:
        return Path(root).expanduser() / "webshop"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hiper-gym" / "webshop"


class Analyzer:
    """Text -> stemmed term strings, with a per-word cache (stemming dominates indexing time)."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("porter")
        self._terms: dict[str, str | None] = {}

    def term(self, word: str) -> str | None:
        """The index term of a lower-cased word, ``None`` for a stop word."""
        term = self._terms.get(word, "")
        if term == "":
            term = None if word in _STOP_WORDS else self._stemmer.stemWord(word)
            self._terms[word] = term
        return term

    def terms(self, text: str) -> list[str]:
        """Index terms of ``text`` in order."""
        terms = (self.term(word) for word in _TOKEN.findall(text.lower()))
        return [t for t in terms if t is not None]


class SearchEngine:
    """BM25 search over a catalogue, returning ASINs best first.

    Example:
        >>> from hiper_gym.webshop.catalogue import load_catalogue
        >>> engine = SearchEngine(load_catalogue())
        >>> len(engine.search("shampoo")) <= 50
        True
    """

    def __init__(self, catalogue: Catalogue, *, cache_dir: str | Path | None = None) -> None:
        """Build the index, or load it from the disk cache for large catalogues.

        Args:
            catalogue: The products to index.
            cache_dir: Cache root; ``None`` uses :func:`default_cache_dir`. The cache is used only
                for catalogues of at least ``CACHE_MIN_PRODUCTS`` products.
        """
        self.asins = [product["asin"] for product in catalogue.products]
        self.analyzer = Analyzer()
        self.loaded_from_cache = False
        documents = [search_document(product) for product in catalogue.products]
        cache_path = None
        if len(catalogue) >= CACHE_MIN_PRODUCTS:
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            cache_path = root / f"{catalogue.fingerprint(documents)}-{TOKENIZER_VERSION}"
        if cache_path is not None and self._load(cache_path):
            return
        self._build(documents)
        if cache_path is not None:
            self._save(cache_path)

    def _build(self, documents: list[str]) -> None:
        self.vocab: dict[str, int] = {}
        word_ids: dict[str, int] = {}  # word -> term id, STOP for stop words
        corpus_ids = []
        for document in documents:
            words = _TOKEN.findall(document)  # documents are lower-case already
            ids = list(map(word_ids.get, words))  # C-level loops: indexing 100k docs stays fast
            if None in ids:
                ids = [self._word_id(word, word_ids) for word in words]
            corpus_ids.append(list(filter(_STOP.__ne__, ids)))
        self.retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        self.retriever.index((corpus_ids, dict(self.vocab)), show_progress=False)

    def _word_id(self, word: str, word_ids: dict[str, int]) -> int:
        term_id = word_ids.get(word)
        if term_id is None:
            term = self.analyzer.term(word)
            term_id = _STOP if term is None else self.vocab.setdefault(term, len(self.vocab))
            word_ids[word] = term_id
        return term_id

    def _save(self, path: Path) -> None:
        """Write to a private folder, then rename it into place (concurrent builders are safe)."""
        staging = path.with_name(f"{path.name}.tmp-{os.getpid()}-{id(self)}")
        staging.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(staging))
        (staging / VOCAB_FILE).write_text(json.dumps(self.vocab))
        if path.exists() and not (path / VOCAB_FILE).is_file():
            shutil.rmtree(path, ignore_errors=True)  # a broken cache left by a killed run
        try:
            staging.rename(path)
        except OSError:  # another process published the same index first
            shutil.rmtree(staging, ignore_errors=True)

    def _load(self, path: Path) -> bool:
        """Load a cached index; ``False`` (and a rebuild) if it is missing or unreadable."""
        if not (path / VOCAB_FILE).exists():
            return False
        try:
            self.retriever = bm25s.BM25.load(str(path))
            self.vocab = json.loads((path / VOCAB_FILE).read_text())
        except (OSError, ValueError, KeyError):
            (path / VOCAB_FILE).unlink(missing_ok=True)  # marks it broken; the rebuild replaces it
            return False
        self.loaded_from_cache = True
        return True

    def index_nbytes(self) -> int:
        """Bytes held by the index arrays."""
        return sum(int(v.nbytes) for v in self.retriever.scores.values() if hasattr(v, "nbytes"))

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[str]:
        """ASINs of the ``k`` best products (positive score only; ties in catalogue order)."""
        ids = [self.vocab[t] for t in self.analyzer.terms(query) if t in self.vocab]
        if not ids:
            return []
        scores = self.retriever.get_scores_from_ids(ids)
        matching = np.flatnonzero(scores > 0)
        if matching.size > k:
            # the k-th best score; everything strictly above it is in, ties at it are taken by order
            kth = np.partition(scores[matching], matching.size - k)[matching.size - k]
            matching = matching[scores[matching] >= kth]
        order = np.lexsort((matching, -scores[matching]))[:k]
        return [self.asins[i] for i in matching[order]]
