"""Where in-context's gain comes from: contexts of equal length, the 'after' check, TTT-NN's tokens equal to its
run's, and spans of tokens whose bytes add up."""
import numpy as np
import pytest

from ttt_core.config import StudyConfig
from ttt_core.context import (CONTEXTS, context_row, longer_document, position_frame, preceding_text, rows_at,
                              run_contexts, span_change, span_frame)
from ttt_core.metrics import scored_tokens, token_byte_counts, token_logprobs


@pytest.fixture
def study(tiny_params):
    from ttt_core.study import prepare

    return prepare(StudyConfig.from_params(**tiny_params), progress=False)


def later_chunk(study) -> dict:
    """A test document that is not its source's first chunk (so it has preceding text)."""
    return next(d for d in study.corpus.test_documents(3, 0) if d["chunk"] > 0)


def test_contexts_differ_only_in_what_their_tokens_say(study):
    document = later_chunk(study)
    row = rows_at([context_row(study, document)])[0]
    lengths = row["context_tokens"]
    assert lengths["nearest"] > 0 and set(lengths) == set(CONTEXTS)
    for kind in ("random-any", "random-domain", "filler"):  # cut to the tokens the nearest neighbours take
        assert lengths[kind] == lengths["nearest"], kind
    assert 0 < lengths["preceding"] <= lengths["nearest"]
    none = np.asarray(row["logprobs"]["none"])
    # The neighbours after the document: a causal model cannot see them, so nothing changes (a check of the code).
    np.testing.assert_allclose(row["logprobs"]["after"], none, atol=1e-4)
    assert not np.allclose(row["logprobs"]["nearest"], none, atol=1e-4)  # before it, they are read
    assert len(row["logprobs"]["ttt"]) == len(none) == len(row["token_bytes"])
    assert sum(row["token_bytes"]) == row["n_bytes"]


def test_a_sources_first_chunk_has_no_preceding_text_and_a_later_one_has_its_own(study):
    first = next(d for d in study.corpus.test_documents(3, 0) if d["chunk"] == 0)
    assert preceding_text(study.corpus, first) is None
    assert rows_at([context_row(study, first, contexts=("preceding",), ttt=False)])[0]["logprobs"]["preceding"] is None
    later = later_chunk(study)
    before = preceding_text(study.corpus, later)
    table = study.corpus.dataset.to_pandas()
    own = table[(table["source_id"] == later["source_id"]) & (table["chunk"] < later["chunk"])].sort_values("chunk")
    assert before == "".join(own["text"])


def test_ttt_tokens_add_up_to_the_ttt_run_at_k(study):
    from ttt_core.study import run_ttt

    rows = {r["doc_id"]: r for r in run_ttt(study, progress=False)}
    for row in rows_at(run_contexts(study, study.test_documents()[:2], contexts=(), progress=False)):
        at_k = next(e["loglik"] for e in rows[row["doc_id"]]["evals"] if e["k"] == study.config.k)
        assert sum(row["logprobs"]["ttt"]) == pytest.approx(at_k, rel=1e-5)
        assert sum(row["logprobs"]["none"]) == pytest.approx(rows[row["doc_id"]]["evals"][0]["loglik"], rel=1e-5)


def test_spans_of_tokens_pair_and_their_bytes_add_up(study):
    rows = rows_at(run_contexts(study, study.test_documents(), contexts=("nearest", "filler"), ttt=False,
                                progress=False))
    whole = span_frame(rows, "none")
    head, rest = span_frame(rows, "none", 0, 8), span_frame(rows, "none", 8)
    assert (head["n_bytes"] + rest.loc[head.index, "n_bytes"] == whole.loc[head.index, "n_bytes"]).all()
    assert np.allclose(head["loglik"] + rest.loc[head.index, "loglik"], whole.loc[head.index, "loglik"])
    change = span_change(rows, "none", "nearest", study.pile_set_names, 0, 8, samples=20)
    assert change.n_documents == len(rows)
    bins = position_frame(rows, [0, 8, 16, 10_000])
    assert set(bins["method"]) == {"none", "nearest", "filler"} and bins["start"].isin([0, 8, 16]).all()


def test_token_byte_counts_sum_to_the_text_and_cut_as_scored_tokens(study):
    tokenizer = study.language_model().tokenizer
    text = "naïve café — 日本語 text\n" * 3
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    counts = token_byte_counts(tokenizer, text, tokens)
    assert len(counts) == len(tokens) and sum(counts) == len(text.encode("utf-8"))
    for m in (1, 5, len(tokens) - 1):
        assert scored_tokens(tokenizer, text, m) == (tokens[:m], sum(counts[:m]))


def test_one_training_scores_every_window_as_its_own_run_would(study):
    """TTT-NN is trained once and scored in each window: equal to a run in that window alone."""
    document = study.test_documents()[0]
    both = context_row(study, document, contexts=("nearest",), windows=(None, 16))
    alone = context_row(study, document, contexts=("nearest",), windows=(16,))
    assert set(both["versions"]["chunk"]["windows"]) == {str(study.language_model().context_length), "16"}
    np.testing.assert_allclose(rows_at([both], 16)[0]["logprobs"]["ttt"], rows_at([alone], 16)[0]["logprobs"]["ttt"],
                               rtol=1e-6)


def test_a_longer_document_is_its_sources_adjacent_test_chunks_and_is_trained_for_as_the_chunk(study):
    table = study.corpus.dataset.to_pandas()
    document = later_chunk(study)
    own = table[(table["source_id"] == document["source_id"]) & (table["domain"] == document["domain"])]
    longer = longer_document(study.corpus, document, 10 * len(document["text"].encode()))
    assert document["chunk"] in longer["chunks"] and len(longer["chunks"]) > 1
    assert longer["chunks"] == list(range(longer["chunks"][0], longer["chunks"][-1] + 1))  # adjacent
    picked = own.set_index("chunk").loc[longer["chunks"]]
    assert (picked["split"] == "test").all() and (picked["group"] == document["group"]).all()
    assert longer["text"] == "".join(picked["text"]) and longer["id"] == document["id"]
    short = longer_document(study.corpus, document, 1)  # already long enough: the chunk itself
    assert short["chunks"] == [document["chunk"]] and short["text"] == document["text"]
    row = context_row(study, document, contexts=("nearest",), longer_bytes=10 * len(document["text"].encode()),
                      longer_windows=(None, 16))
    chunk, grown = rows_at([row])[0], rows_at([row], 16, "longer")[0]
    assert sum(grown["token_bytes"]) == grown["n_bytes"] == len(longer["text"].encode())
    assert len(grown["logprobs"]["ttt"]) == len(grown["logprobs"]["none"]) == len(grown["token_bytes"])
    # One training for both versions: the chunk's TTT-NN scores equal those of a row without the longer version.
    alone = rows_at([context_row(study, document, contexts=("nearest",))])[0]
    np.testing.assert_allclose(chunk["logprobs"]["ttt"], alone["logprobs"]["ttt"], rtol=1e-6)
    with pytest.raises(ValueError, match="version"):
        rows_at([row], None, "long")


def test_scored_positions_only_give_the_same_log_probabilities_as_every_position(study, monkeypatch):
    import torch

    from ttt_core import metrics

    lm = study.language_model()
    tokens = lm.tokenizer("the quick brown fox jumps over the lazy dog", add_special_tokens=False)["input_ids"]
    context = [lm.prefix_token_id] + tokens[:5]
    sliced = token_logprobs(lm.model, tokens, lm.prefix_token_id, 64, context, after=tokens[:3])
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([context + tokens[:-1]])).logits[0, len(context) - 1:]
    every = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(tokens)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(sliced, every, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(metrics, "_accepts_logits_to_keep", lambda model_class: False)  # a model without logits_to_keep
    np.testing.assert_allclose(token_logprobs(lm.model, tokens, lm.prefix_token_id, 64, context), sliced,
                               rtol=1e-5, atol=1e-6)


def test_the_head_share_is_the_first_tokens_part_of_the_summed_gain():
    from ttt_core.context import head_share

    rows = [{"logprobs": {"none": [-3.0, -2.0, -1.0], "m": [-1.0, -1.5, -1.0]}},
            {"logprobs": {"none": [-2.0, -2.0], "m": [-1.0, -2.0]}, "x": 0}]
    assert head_share(rows, "m", 1) == pytest.approx((2.0 + 1.0) / (2.5 + 1.0))
    assert np.isnan(head_share([{"logprobs": {"none": [-1.0], "m": [-2.0]}}], "m", 1))  # no gain, no share


def test_rolling_windows_scored_at_their_targets_only_equal_the_full_projection(study):
    """Several rolling windows (lm-eval's): the targets' logits alone give what projecting every position gave."""
    import torch

    from ttt_core.metrics import rolling_windows

    lm = study.language_model()
    tokens = lm.tokenizer(" ".join(f"word{i % 17} and more text" for i in range(30)),
                          add_special_tokens=False)["input_ids"]
    windows = rolling_windows(tokens, lm.prefix_token_id, 16)
    assert len(windows) > 3 and len(tokens) > 60
    expected = []
    with torch.no_grad():
        for ctx, targets in windows:  # the loop before `logits_to_keep`: every position projected, the last kept
            logits = lm.model(input_ids=torch.tensor([(ctx + targets)[:-1]])).logits[0, -len(targets):]
            expected += torch.log_softmax(logits.float(), -1).gather(
                1, torch.tensor(targets)[:, None])[:, 0].tolist()
    np.testing.assert_allclose(token_logprobs(lm.model, tokens, lm.prefix_token_id, 16), expected, rtol=1e-5,
                               atol=1e-6)
