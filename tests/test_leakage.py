"""Leakage and controls: content-group split, byte-bounded chunks (one step per neighbour), decontamination,
source-level resampling, random-neighbour controls and the leaky index."""
import json
import random

import numpy as np
import pytest

import ttt_core.study as study_module
from ttt_core import decontaminate
from ttt_core.config import StudyConfig
from ttt_core.corpus import assign_splits, build_corpus, chunk_text
from ttt_core.index import indexed_mask
from ttt_core.metrics import bootstrap_mean
from ttt_core.models import byte_tokenizer
from ttt_core.retrieve import random_neighbors
from ttt_core.study import prepare, run_ttt
from ttt_core.ttt import training_chunks

# Texts that cost the most tokens per byte: digits, CJK, accents, emoji, code.
HARD = ["3 + 4 * 17 = 71; solve 9*x - 12 = 33 for x.\n", "中文文本，没有空格。日本語のテキスト。\n",
        "Ünïcödé àccents and ß ø å.\n", "emoji 🙂🚀🎉 and symbols ∑∫√≈≠.\n", "def f(x):\n    return x ** 2 + 1\n"]


def test_chunks_are_within_the_byte_bound_and_cover_the_text():
    rng = random.Random(0)
    text = "".join(rng.choice(HARD) for _ in range(400))
    for size in (64, 300, 1000):
        pieces = chunk_text(text, size)
        assert "".join(pieces) == text
        assert max(len(p.encode("utf-8")) for p in pieces) <= size
        assert min(len(p.encode("utf-8")) for p in pieces) >= size // 4  # no near-empty tail


def test_a_short_tail_is_recut_near_the_middle_not_at_a_far_line_break():
    text = "Installing the package\n" + ("lorem " * 200)[:990]  # one line break, far from the middle
    assert [len(p.encode()) for p in chunk_text(text, 1000)] == [506, 507]


def test_leaky_index_and_random_controls_do_not_mix():
    with pytest.raises(ValueError, match="invalid leaky_index=True"):
        StudyConfig(leaky_index=True, neighbors="random-any").validate()


def test_a_default_neighbour_is_exactly_one_step_for_any_text():
    """The default chunk is at most 1,000 bytes and a token covers at least one byte: one step at max_length 1024,
    also with a BOS in front (Gemma) and for the costliest texts."""
    config = StudyConfig()
    tokenizer = byte_tokenizer(add_bos=True)  # one token per byte: the worst case of any byte-level tokenizer
    rng = random.Random(1)
    for _ in range(20):
        text = "".join(rng.choice(HARD) for _ in range(300))
        for piece in chunk_text(text, config.chunk_bytes):
            chunks = training_chunks(tokenizer, piece, config.max_length, bos_token_id=tokenizer.bos_token_id)
            assert len(chunks) == 1, f"a {len(piece.encode())}-byte neighbour took {len(chunks)} steps"


def test_a_content_group_falls_on_one_side_of_the_split():
    groups = {"translations": [f"messages-{b:03d}" for b in range(30) for _ in range(5)]}  # 5 languages each
    split = assign_splits(groups, 0.2, split_seed=1216)
    assert sum(v == "test" for v in split.values()) == 6 and len(split) == 30
    other = assign_splits(groups, 0.2, split_seed=7)
    assert {g for (_, g), v in split.items() if v == "test"} != {g for (_, g), v in other.items() if v == "test"}


def test_translations_are_grouped_by_message_block_across_languages(tmp_path):
    from ttt_core import minipile

    docs = minipile._po_docs(tmp_path)
    source = next(s for s in minipile.SOURCES if s.domain == "translations_po")
    block = {doc_id: source.group(doc_id) for doc_id in docs}
    english = {}
    for doc_id, text in docs.items():
        for pair in text.split("\n\n"):
            first_line = pair.split("\n")[0]
            if first_line.strip():  # (a message that starts with a line break has an empty first line)
                english.setdefault(first_line, set()).add(block[doc_id])
    # Every English message sits in exactly one content group, whatever the language.
    assert max(len(groups) for groups in english.values()) == 1


def _with_duplicate(path, tiny_pile):
    """The tiny corpus plus one train-side copy of every document under another source name."""
    lines = tiny_pile.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    path.write_text("\n".join(lines + [json.dumps(r) for r in records]) + "\n")
    return path


def test_decontamination_leaves_out_train_chunks_that_copy_test_text(tiny_params, pile_file, tmp_path):
    corpus_file = _with_duplicate(tmp_path / "dup.jsonl", pile_file)
    config = StudyConfig.from_params(**{**tiny_params, "corpus": str(corpus_file)})
    study = prepare(config, progress=False)
    scores = decontaminate.train_overlap(study.corpus, config.decontam_ngram)
    copies = scores > 0.9
    assert copies.any()  # the copies of test documents that landed in the train split
    keep = indexed_mask(config, study.corpus)
    assert not (keep & copies).any() and len(study.index) == keep.sum()
    leaky = prepare(StudyConfig.from_params(**{**tiny_params, "corpus": str(corpus_file), "decontam_threshold": None}),
                    progress=False)
    assert len(leaky.index) == len(study.corpus.rows("train"))
    doc = study.corpus.test_documents(1, 0)[0]
    test_texts = [doc["text"]]
    assert decontaminate.train_split_overlap(study.corpus, test_texts, 50)[0] >= \
        decontaminate.train_split_overlap(study.corpus, test_texts, 50, keep)[0]


def test_character_ngrams_measure_unspaced_scripts():
    text = "中文文本，没有空格。" * 10  # period 10: exactly 10 distinct 8-character n-grams
    assert len(decontaminate.char_ngrams(text, 8)) == 10
    assert decontaminate.document_overlap(text, ["没有空格。中文文本，"], 8) == pytest.approx(0.3)  # 3 of them
    assert decontaminate.document_overlap(text, ["日本語のテキストです。"], 8) == 0


def test_test_documents_come_from_distinct_sources_first(tiny_params):
    study = prepare(StudyConfig.from_params(**{**tiny_params, "test_fraction": 0.5}), progress=False)
    docs = study.corpus.test_documents(3, seed=0)
    for domain in {d["domain"] for d in docs}:
        picked = [d["source_id"] for d in docs if d["domain"] == domain]
        assert len(set(picked)) == len(picked)  # 5 test sources per domain: three picks, three sources


def test_two_stage_bootstrap_widens_the_interval_of_correlated_documents():
    values = np.array([1.0] * 10 + [-1.0] * 10)
    groups = ["a"] * 10 + ["b"] * 10
    _, low, high = bootstrap_mean(values, 2000, 0)
    _, glow, ghigh = bootstrap_mean(values, 2000, 0, groups=groups)
    assert high - low < 0.8 and (glow, ghigh) == (-1.0, 1.0)


def test_random_controls_are_seeded_prefix_stable_and_of_the_right_domain(tiny_params):
    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    doc = study.corpus.test_documents(1, 0)[0]
    same = random_neighbors(doc, 4, "random-domain", study.index, study.corpus, seed=0)
    assert {n.domain for n in same} == {doc["domain"]}
    assert [n.row for n in random_neighbors(doc, 2, "random-domain", study.index, study.corpus, 0)] == \
        [n.row for n in same[:2]]
    anywhere = random_neighbors(doc, 12, "random-any", study.index, study.corpus, seed=0)
    assert len({n.domain for n in anywhere}) > 1 and set(n.row for n in anywhere) <= set(study.index.rows)
    assert [n.row for n in random_neighbors(doc, 12, "random-any", study.index, study.corpus, 1)] != \
        [n.row for n in anywhere]


def test_control_rows_record_one_step_per_chunk_and_share_k0(tiny_params):
    params = {**tiny_params, "chunk_bytes": 200}  # 200-byte chunks fit the tiny model's 256 positions
    nearest = run_ttt(prepare(StudyConfig.from_params(**params), progress=False), progress=False)
    control = run_ttt(prepare(StudyConfig.from_params(**params, neighbors="random-any"), progress=False),
                      progress=False)
    for row in nearest + control:
        assert row["train_steps"] == [1] * len(row["neighbors"])
    assert [r["evals"][0] for r in nearest] == [r["evals"][0] for r in control]  # k = 0 is the same scoring
    assert [r["neighbors"] for r in nearest] != [r["neighbors"] for r in control]


def test_an_index_that_retrieves_the_same_neighbours_reuses_the_rows(tiny_params, monkeypatch):
    clean = run_ttt(prepare(StudyConfig.from_params(**tiny_params), progress=False), progress=False)
    calls = []
    real = study_module.test_time_train
    monkeypatch.setattr(study_module, "test_time_train", lambda *a, **k: calls.append(a[1]["id"]) or real(*a, **k))
    leaky = run_ttt(prepare(StudyConfig.from_params(**tiny_params, decontam_threshold=None), progress=False),
                    progress=False)
    # Nothing in the tiny corpus is contaminated, so the same neighbours come back: copied, not retrained.
    assert not calls and [r["evals"] for r in leaky] == [r["evals"] for r in clean]


def test_the_leaky_index_holds_other_sources_but_never_the_documents_own(tiny_params):
    study = prepare(StudyConfig.from_params(**tiny_params, leaky_index=True), progress=False)
    assert len(study.index) == len(study.corpus)  # train and test chunks
    rows = run_ttt(study, progress=False)
    for row in rows:
        own = row["source_id"]
        assert all(not n.split("/", 1)[1].startswith(own + "#") for n in row["neighbors"])


def test_invalid_control_parameters_are_named():
    for name, value, valid in (("neighbors", "furthest", "random-domain"), ("split_by", "page", "group"),
                               ("decontam_threshold", 1.5, "None"), ("decontam_ngram", 3, ">= 8")):
        with pytest.raises(ValueError, match=f"invalid {name}=.*{valid}"):
            StudyConfig.from_params(**{name: value}).validate()


class _TextsOnly:
    """What decontamination reads of a corpus: rows per split, texts, and a cache."""

    def __init__(self, train: list[str], test: list[str]):
        self._texts, self.cache = train + test, {}
        self._rows = {"train": np.arange(len(train)), "test": np.arange(len(train), len(train) + len(test))}

    def rows(self, split):
        return self._rows[split]

    def texts(self, rows):
        return [self._texts[int(r)] for r in rows]


def _long_train_text(seed: int, chars: int = 42_000) -> str:
    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    out = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(words) + str(rng.randint(0, 999)))
    return " ".join(out)


TEST_DOCS = {
    "english": "The quarterly report shows that revenue grew by twelve percent, driven mostly by the new subscription "
               "plans introduced in March; operating costs stayed flat, and the board approved a dividend of forty "
               "cents per share, payable to shareholders of record at the end of the month.",
    "unicode": "東京の古い商店街では、朝早くから魚屋と八百屋が店を開け、近所の人々が買い物かごを手に集まってくる。"
               "昼になると定食屋の前に行列ができ、夕方には子どもたちが駄菓子屋に寄り道をして帰っていく。"
               "この町の暮らしは百年前からほとんど変わっていないと、店主たちは口をそろえて言う。",
}


@pytest.mark.parametrize("kind", ["english", "unicode", "edited"])
def test_a_long_train_text_that_holds_a_test_document_is_left_out(kind):
    """Whole documents (chunk_bytes None, the paper's setting): a 42 kB train document that holds a 280-character
    test document scores 0.005 by the share of *its own* n-grams found in the test split and was kept. The
    share of any one test document's n-grams that a train text contains leaves it out too."""
    test_doc = TEST_DOCS["english" if kind == "edited" else kind]
    inside = test_doc
    if kind == "edited":  # re-wrapped, two words changed, a comma dropped: still the test document
        inside = test_doc.replace("twelve", "eleven").replace("March;", "March").replace("forty", "fifty")
        inside = inside.replace(" the new ", "\n  the new ")
    host = _long_train_text(0)
    cut = len(host) // 2
    train = [host[:cut] + " " + inside + " " + host[cut:], _long_train_text(1), _long_train_text(2)[:900]]
    corpus = _TextsOnly(train, [test_doc, _long_train_text(3)[:700]])
    config = StudyConfig(decontam_threshold=0.1)
    assert decontaminate.train_overlap(corpus, config.decontam_ngram)[0] < 0.02  # the one-sided share misses it
    assert decontaminate.clean_train_mask(config, corpus).tolist() == [False, True, True]


def test_the_decontamination_shares_are_computed_once_per_corpus_not_once_per_process(tiny_params, monkeypatch):
    """Every notebook is its own process: at 10^5 chunks the shares take minutes, so they are kept beside the
    corpus and read back, equal, by the next process (a fresh Corpus object)."""
    import numpy as np

    import ttt_core.decontaminate as decontaminate
    from ttt_core.config import StudyConfig
    from ttt_core.corpus import build_corpus, corpus_folder, load_corpus

    config = StudyConfig.from_params(**tiny_params)
    first = decontaminate.clean_train_mask(config, build_corpus(config, progress=False))
    calls = []
    real = decontaminate.contamination_shares
    monkeypatch.setattr(decontaminate, "contamination_shares", lambda *a: calls.append(1) or real(*a))
    again = load_corpus(corpus_folder(config))
    assert np.array_equal(decontaminate.clean_train_mask(config, again), first)
    assert calls == []
    other_n = StudyConfig.from_params(**{**tiny_params, "decontam_ngram": 13})
    decontaminate.clean_train_mask(other_n, again)
    assert calls == [1]  # another n-gram length is another measure
