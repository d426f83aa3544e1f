"""Overlap between test documents and the text a model is trained on, measured in character n-grams.

Characters rather than words so that Chinese, Japanese and other unspaced scripts are measured too; whitespace
runs count as one space so that re-wrapped text still matches. GPT-3 flagged a test example when any 13-word
n-gram also occurred in training; 50 characters is about 9 English words, or a short phrase in an unspaced script.
A train chunk is left out of the index (`clean_train_mask`) when either share exceeds `config.decontam_threshold`:
the share of *its own* n-grams found in the test split (a train chunk that is mostly test text), or the largest
share of any *one test document's* n-grams that it contains (a long train document that holds a short test
document: with whole documents, the paper's setting, a 42 kB document holding a 280-character test document
verbatim has 0.005 of its own n-grams in the test split). One threshold for both: each is a share of one text's
n-grams found in the other, and with chunks of similar size the two are about equal. A test document shorter than
n characters is a single n-gram (its whole text) and is matched only by an equal train text. Each test document's
share of n-grams found in the train split or in its neighbours is what the corpus chapter reports
(`document_overlap`).
"""
from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from .config import StudyConfig
from .corpus import Corpus
from .files import atomic_file

_SPACE = re.compile(r"\s+")
# Bump when `hashed_ngrams` or `contamination_shares` changes what they measure: the shares kept beside a corpus
# are read back only under the version that computed them.
SHARES_VERSION = 1


def char_ngrams(text: str, n: int) -> set[str]:
    """The set of n-character substrings of `text` with whitespace runs collapsed (the whole text if shorter)."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= n:
        return {text} if text else set()
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def hashed_ngrams(text: str, n: int) -> set[int]:
    """`char_ngrams` as hashes (Python's string hash: equal within one process), built without keeping the
    strings: a set of ints is several times smaller than one of n-character strings."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= n:
        return {hash(text)} if text else set()
    return {hash(text[i:i + n]) for i in range(len(text) - n + 1)}


def overlap_share(grams: set[str], reference: set[str]) -> float:
    """Share of `grams` found in `reference` (0 for an empty text)."""
    return len(grams & reference) / len(grams) if grams else 0.0


def ngram_union(texts, n: int) -> set[str]:
    """Every `n`-character n-gram of any of `texts` (`char_ngrams`), as one set."""
    union: set[str] = set()
    for text in texts:
        union |= char_ngrams(text, n)
    return union


def contamination_shares(train_texts, test_texts, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every train text: (the share of its n-grams found in the test split, the largest share of one test
    document's n-grams found in it), arrays of shape [len(train_texts)] in [0, 1].

    Affordable at 10^5 train chunks and whole documents: n-grams are kept as hashes, and an inverted index from
    n-gram hash to the test documents holding it turns the second share into a count over the n-grams a train
    text shares with the test split, never a loop over (train, test) pairs. Memory: one hash per distinct test
    n-gram (and its documents), plus one train text's n-grams at a time."""
    from collections import Counter

    holders: dict[int, int | list[int]] = {}  # n-gram hash -> the test document holding it (a list if several)
    sizes = []  # distinct n-grams per test document
    for doc, text in enumerate(test_texts):
        grams = hashed_ngrams(text, n)
        sizes.append(len(grams))
        for g in grams:
            held = holders.setdefault(g, doc)
            if isinstance(held, list):
                held.append(doc)
            elif held != doc:
                holders[g] = [held, doc]
    sizes = np.maximum(np.array(sizes, dtype=np.float64), 1)
    own, covered = [], []
    for text in train_texts:
        grams = hashed_ngrams(text, n)
        shared = holders.keys() & grams  # set operations in C: the per-text cost is that of building its n-grams
        own.append(len(shared) / len(grams) if grams else 0.0)
        counts = Counter()
        for g in shared:
            held = holders[g]
            counts.update(held if isinstance(held, list) else (held,))
        covered.append(max((c / sizes[doc] for doc, c in counts.items()), default=0.0))
    return np.array(own, dtype=np.float64), np.array(covered, dtype=np.float64)


def _shares(corpus: Corpus, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`contamination_shares` of the corpus's splits, kept in memory and beside the corpus (a built corpus never
    changes: its folder is written once): at 10^5 chunks they take minutes, and every notebook is a process."""
    key = ("contamination_shares", n)
    if key not in corpus.cache:
        folder = getattr(corpus, "path", None)  # None: texts without a built corpus (kept in memory only)
        # Named by the measure's version too: the corpus folder never changes, but this code may.
        saved = folder / f"contamination-shares-v{SHARES_VERSION}-n{n}.npz" if folder is not None else None
        if saved is not None and saved.exists():
            with np.load(saved) as kept:
                corpus.cache[key] = (kept["own"], kept["covered"])
        else:
            own, covered = contamination_shares(corpus.texts(corpus.rows("train")),
                                                corpus.texts(corpus.rows("test")), n)
            if saved is not None:
                with atomic_file(saved) as tmp, open(tmp, "wb") as f:
                    np.savez(f, own=own, covered=covered)
            corpus.cache[key] = (own, covered)
    return corpus.cache[key]


def train_overlap(corpus: Corpus, n: int) -> np.ndarray:
    """For every train chunk (in `corpus.rows('train')` order): the share of its n-grams found in the test split."""
    return _shares(corpus, n)[0]


def covered_test_share(corpus: Corpus, n: int) -> np.ndarray:
    """For every train chunk (in `corpus.rows('train')` order): the largest share of one test document's n-grams
    found in it (1.0: it holds a whole test document)."""
    return _shares(corpus, n)[1]


def clean_train_mask(config: StudyConfig, corpus: Corpus) -> np.ndarray:
    """Boolean mask over the train chunks kept in the index: those whose own n-grams are at most
    `decontam_threshold` test text and that hold at most that share of any one test document; all of them when
    `decontam_threshold` is None."""
    n_train = len(corpus.rows("train"))
    if config.decontam_threshold is None:
        return np.ones(n_train, dtype=bool)
    own, covered = _shares(corpus, config.decontam_ngram)
    return (own <= config.decontam_threshold) & (covered <= config.decontam_threshold)


def document_overlap(text: str, reference_texts, n: int) -> float:
    """Share of a test document's n-grams found in `reference_texts` (the train split, or its neighbours)."""
    return overlap_share(char_ngrams(text, n), ngram_union(reference_texts, n))


def _texts_of(corpus: Corpus, rows) -> Iterator[tuple[str, str, str]]:
    """(domain, source_id, text) of the corpus rows `rows` in row order, streamed in batches from the memory-mapped
    table (never every text at once)."""
    keep = np.zeros(len(corpus), dtype=bool)
    keep[np.asarray(rows, dtype=np.int64)] = True
    row = 0
    for batch in corpus.dataset.select_columns(["domain", "source_id", "text"]).iter(batch_size=1000):
        for domain, source, text in zip(batch["domain"], batch["source_id"], batch["text"]):
            if keep[row]:
                yield domain, source, text
            row += 1


def train_split_overlap(corpus: Corpus, texts, n: int, mask: np.ndarray | None = None) -> list[float]:
    """Each text's share of n-grams found in the train split (or in the train chunks where `mask` is true), a list
    of len(texts) floats in [0, 1].

    Memory: the hashes of the texts' own n-grams and of those found, never the train split's n-grams (10^8 strings
    at 10^5 chunks); the train chunks are streamed once per call."""
    rows = corpus.rows("train")
    rows = rows if mask is None else rows[mask]
    grams = [hashed_ngrams(t, n) for t in texts]
    wanted = set().union(*grams)
    found: set[int] = set()
    for _, _, text in _texts_of(corpus, rows):
        found |= wanted.intersection(hashed_ngrams(text, n))
    return [len(g & found) / len(g) if g else 0.0 for g in grams]


def other_source_overlap(corpus: Corpus, documents: list[dict], n: int) -> list[float]:
    """Each test document's share of n-grams found in any chunk of another source, train or test: what a split by
    file lets into the index (the same message or page in another language is another source). A list of
    len(documents) floats in [0, 1].

    Memory: per source, only the documents' own n-grams it holds (hashes), never every n-gram of the corpus; the
    corpus is streamed once per call."""
    from collections import Counter

    grams = [hashed_ngrams(doc["text"], n) for doc in documents]
    wanted = set().union(*grams)
    per_source: dict[tuple[str, str], set[int]] = {}
    for domain, source, text in _texts_of(corpus, range(len(corpus))):
        held = wanted.intersection(hashed_ngrams(text, n))
        if held:
            per_source.setdefault((domain, source), set()).update(held)
    counts = Counter(g for held in per_source.values() for g in held)  # sources holding each wanted n-gram
    shares = []
    for doc, doc_grams in zip(documents, grams):
        own = per_source.get((doc["domain"], doc["source_id"]), set())
        shares.append(sum(counts[g] > (g in own) for g in doc_grams) / len(doc_grams) if doc_grams else 0.0)
    return shares
