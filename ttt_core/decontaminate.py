"""Overlap between test documents and the text a model is trained on, measured in character n-grams.

Characters rather than words so that Chinese, Japanese and other unspaced scripts are measured too; whitespace
runs count as one space so that re-wrapped text still matches. GPT-3 flagged a test example when any 13-word
n-gram also occurred in training; 50 characters is about 9 English words, or a short phrase in an unspaced script.
A train chunk is left out of the index when the share of its n-grams found in the test split exceeds
`config.decontam_threshold` (`clean_train_mask`), and each test document's share of n-grams found in the train
split or in its neighbours is what the corpus chapter reports (`document_overlap`).
"""
from __future__ import annotations

import re

import numpy as np

from .config import StudyConfig
from .corpus import Corpus

_SPACE = re.compile(r"\s+")


def char_ngrams(text: str, n: int) -> set[str]:
    """The set of n-character substrings of `text` with whitespace runs collapsed (the whole text if shorter)."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= n:
        return {text} if text else set()
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def overlap_share(grams: set[str], reference: set[str]) -> float:
    """Share of `grams` found in `reference` (0 for an empty text)."""
    return len(grams & reference) / len(grams) if grams else 0.0


def ngram_union(texts, n: int) -> set[str]:
    union: set[str] = set()
    for text in texts:
        union |= char_ngrams(text, n)
    return union


def train_overlap(corpus: Corpus, n: int) -> np.ndarray:
    """For every train chunk (in `corpus.rows('train')` order): the share of its n-grams found in the test split."""
    key = ("train_overlap", n)
    if key not in corpus.cache:
        test = ngram_union(corpus.texts(corpus.rows("test")), n)
        corpus.cache[key] = np.array([overlap_share(char_ngrams(t, n), test)
                                      for t in corpus.texts(corpus.rows("train"))])
    return corpus.cache[key]


def clean_train_mask(config: StudyConfig, corpus: Corpus) -> np.ndarray:
    """Boolean mask over the train chunks kept in the index: all of them when `decontam_threshold` is None."""
    n_train = len(corpus.rows("train"))
    if config.decontam_threshold is None:
        return np.ones(n_train, dtype=bool)
    return train_overlap(corpus, config.decontam_ngram) <= config.decontam_threshold


def document_overlap(text: str, reference_texts, n: int) -> float:
    """Share of a test document's n-grams found in `reference_texts` (the train split, or its neighbours)."""
    return overlap_share(char_ngrams(text, n), ngram_union(reference_texts, n))


def train_split_overlap(corpus: Corpus, texts, n: int, mask: np.ndarray | None = None) -> list[float]:
    """Each text's share of n-grams found in the train split (or in the train chunks where `mask` is true)."""
    rows = corpus.rows("train")
    rows = rows if mask is None else rows[mask]
    key = ("train_union", n, None if mask is None else hash(mask.tobytes()))
    if key not in corpus.cache:
        corpus.cache[key] = ngram_union(corpus.texts(rows), n)
    return [overlap_share(char_ngrams(t, n), corpus.cache[key]) for t in texts]


def other_source_overlap(corpus: Corpus, documents: list[dict], n: int) -> list[float]:
    """Each test document's share of n-grams found in any chunk of another source, train or test: what a split by
    file lets into the index (the same message or page in another language is another source)."""
    from collections import Counter

    key = ("source_ngrams", n)
    if key not in corpus.cache:
        per_source: dict[tuple[str, str], set[int]] = {}
        table = corpus.dataset.select_columns(["domain", "source_id", "text"])
        for batch in table.iter(batch_size=500):
            for domain, source, text in zip(batch["domain"], batch["source_id"], batch["text"]):
                per_source.setdefault((domain, source), set()).update(map(hash, char_ngrams(text, n)))
        counts = Counter(g for grams in per_source.values() for g in grams)  # sources holding each n-gram
        corpus.cache[key] = (per_source, counts)
    per_source, counts = corpus.cache[key]
    shares = []
    for doc in documents:
        grams = set(map(hash, char_ngrams(doc["text"], n)))
        own = per_source.get((doc["domain"], doc["source_id"]), set())
        shares.append(sum(counts[g] > (g in own) for g in grams) / len(grams) if grams else 0.0)
    return shares
