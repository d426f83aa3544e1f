"""Baselines: in-context keeps the nearest neighbours, dynamic evaluation never scores what it trained on,
interpolation's alpha is never chosen on the documents it is reported on."""
import math

import numpy as np
import pytest
import torch

from ttt_core import baselines
from ttt_core.baselines import (choose_alpha, dynamic_evaluation, in_context, in_context_prefix,
                                interpolated_loglik, unigram_distribution)
from ttt_core.config import StudyConfig
from ttt_core.metrics import score_text, token_logprobs
from ttt_core.models import load_language_model
from ttt_core.ttt import snapshot_weights

TEXT = "the cat sat on the mat and looked at the dog. " * 6


@pytest.fixture
def lm(tmp_path):
    return load_language_model("tiny-llama", tmp_path, device="cpu")


def test_in_context_truncation_keeps_the_nearest_neighbours():
    nearest, middle, farthest = [1] * 5, [2] * 5, [3] * 5
    kept = in_context_prefix([nearest, middle, farthest], budget=8)
    assert kept == [2, 2, 2] + [1] * 5  # all of the nearest, next to the document; the cut one loses its start
    official = in_context_prefix([nearest, middle, farthest], budget=8, keep="official")
    assert official == [2, 2, 2] + [3] * 5 and 1 not in official  # the official tail: the farthest neighbour
    assert in_context_prefix([nearest], budget=0) == []
    with pytest.raises(ValueError, match="invalid keep='tail'"):
        in_context_prefix([nearest], 3, keep="tail")


def test_in_context_without_neighbours_is_the_studys_bits_per_byte(lm):
    plain = score_text(lm, TEXT)
    assert in_context(lm, TEXT, [])["loglik"] == pytest.approx(plain["loglik"], rel=1e-6)
    tokens = lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert token_logprobs(lm.model, tokens, lm.prefix_token_id, 16).sum() == pytest.approx(
        score_text(lm, TEXT, eval_context=16)["loglik"], rel=1e-5)  # rolling windows, as the study scores
    short = "the cat sat."
    with_context = in_context(lm, short, ["a neighbour text. " * 3])
    assert 0 < with_context["context_tokens"] <= lm.context_length - with_context["n_tokens"]
    assert with_context["loglik"] != pytest.approx(score_text(lm, short)["loglik"])  # the context is used


def test_dynamic_evaluation_never_scores_a_token_it_trained_on(lm, monkeypatch):
    trained_texts, scored_texts = [], []
    real_train = baselines.train_on_text

    def spy_train(lm_, text, optimizer, config):
        trained_texts.append(text)
        return real_train(lm_, text, optimizer, config)

    import ttt_core.metrics as metrics
    real_score = metrics.score_text
    monkeypatch.setattr(baselines, "train_on_text", spy_train)
    monkeypatch.setattr(metrics, "score_text", lambda lm_, text, *a: scored_texts.append(text) or real_score(lm_, text, *a))
    before = snapshot_weights(lm.model)
    row = dynamic_evaluation(lm, TEXT, StudyConfig(learning_rate=3e-3, max_length=128), steps=(0, 2))
    assert row["trained"] + row["scored"] == TEXT and row["trained"] and row["scored"]
    assert set(trained_texts) == {row["trained"]} and len(trained_texts) == 2
    assert set(scored_texts) == {row["scored"]} and len(scored_texts) == 2
    assert [e["steps"] for e in row["evals"]] == [0, 2] and row["evals"][1]["loglik"] > row["evals"][0]["loglik"]
    assert all(torch.equal(p, b) for p, b in zip(lm.model.parameters(), before))


def doc(doc_id, p_lm, n=20, hit=True):
    """A document of n copies of token 7 with LM probability p_lm; p_knn puts all its mass on 7 (hit) or not."""
    p_knn = np.zeros(10)
    p_knn[7 if hit else 3] = 1.0
    return {"id": doc_id, "logprobs": np.full(n, math.log(p_lm)), "targets": [7] * n, "p_knn": p_knn, "n_bytes": n}


def test_alpha_is_chosen_on_held_out_documents_never_on_the_reported_ones():
    tuning = [doc("t1", 0.5, hit=False), doc("t2", 0.6, hit=False)]  # the neighbours miss: alpha 0 is best
    reported = [doc("e1", 0.01), doc("e2", 0.02)]  # the neighbours hit: the largest alpha is best on these
    alpha = choose_alpha(tuning, evaluated_ids=[d["id"] for d in reported])
    on_reported = choose_alpha(reported)  # what the official code's test-tuned variant picks
    assert alpha == 0.0 and on_reported == max(baselines.ALPHA_GRID)
    with pytest.raises(ValueError, match="alpha would be chosen on 1 of the documents it is reported on"):
        choose_alpha(tuning + [reported[0]], evaluated_ids=["e1", "e2"])


def test_cross_fitted_alpha_ignores_the_documents_own_tokens_and_its_group():
    # e1's neighbours hit: tuned on e1 the largest alpha wins, and e1 pulls any tuning set it is in that way.
    documents = [doc("e1", 0.01), doc("e2", 0.5, hit=False), doc("t1", 0.5, hit=False), doc("t2", 0.6, hit=False)]
    groups = {"e1": "g", "e2": "g", "t1": "a", "t2": "b"}
    alphas = baselines.cross_fitted_alphas(documents, groups)
    assert choose_alpha([documents[0]]) == max(baselines.ALPHA_GRID)
    assert alphas["e1"] == 0.0  # chosen on t1 and t2 only (and e2 of its own group is left out too)
    assert alphas["e2"] == 0.0  # e1 shares e2's content group: left out, else it would pull alpha up
    assert alphas["t1"] == alphas["t2"] == max(baselines.ALPHA_GRID)  # e1 does tune the other groups' alpha


def test_unigram_distribution_weights_nearer_neighbours_more():
    p = unigram_distribution([[1, 1], [2, 2]], distances=[0.0, 2.0], vocab_size=4)
    assert p.sum() == pytest.approx(1.0) and p[1] > p[2] > 0 and p[0] == 0
    assert p[1] / p[2] == pytest.approx(math.exp(2.0))
    assert interpolated_loglik(np.log([0.5, 0.5]), [1, 2], p, 0.0) == pytest.approx(2 * math.log(0.5))


def test_text_overlap_measures_shared_spans_and_ngrams():
    text = "0123456789 shared span of text!"
    copied = baselines.text_overlap(text, ["zzz", "qqq shared span of text! rrr"], 8)
    assert copied["longest_shared_chars"] == len(" shared span of text!")
    assert copied["ngram_share"] == pytest.approx((21 - 7) / (len(text) - 7))
    assert baselines.text_overlap(text, ["zzzz"], 8) == {"ngram_share": 0.0, "longest_shared_chars": 0}
    assert baselines.text_overlap(text, [], 8)["longest_shared_chars"] == 0


def test_baselines_set_random_same_domain_chunks_beside_the_nearest_in_context(tiny_params):
    from ttt_core.study import prepare

    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    documents = study.test_documents()[:2]
    rows = baselines.run_baselines(study, documents, contexts=(None,), progress=False)
    for row, document in zip(rows, documents):
        entries = {(e["neighbors"], e["keep"]): e for e in row["in_context"]}
        assert set(entries) == {("nearest", "nearest"), ("nearest", "official"), ("random-domain", "nearest")}
        assert math.isfinite(entries[("random-domain", "nearest")]["loglik"])
        random_ids = entries[("random-domain", "nearest")]["ids"]
        domain_of = dict(zip(study.corpus.dataset["id"], study.corpus.dataset["domain"]))
        assert len(random_ids) == len(row["neighbors"]) and set(random_ids) != set(row["neighbors"])
        assert {domain_of[i] for i in random_ids} == {document["domain"]}  # the document's own domain, not any
        assert set(row["overlap"]) == {"nearest", "random-domain"}
        assert all(0.0 <= o["ngram_share"] <= 1.0 for o in row["overlap"].values())
    again = baselines.run_baselines(study, documents, contexts=(None,), progress=False)
    assert again == rows  # read back from the results file, not recomputed


def test_dynamic_evaluation_leaves_no_gradient_after_a_failed_step(tmp_path, monkeypatch):
    config = StudyConfig(learning_rate=3e-3, max_length=128)
    lm = load_language_model("tiny-llama", tmp_path, device="cpu")
    real = torch.nn.utils.clip_grad_norm_
    calls = []

    def fail_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", fail_first)
    with pytest.raises(KeyboardInterrupt):
        dynamic_evaluation(lm, TEXT, config, steps=(0, 2))
    assert all(p.grad is None for p in lm.model.parameters())
    after = dynamic_evaluation(lm, TEXT, config, steps=(0, 2))
    fresh = dynamic_evaluation(load_language_model("tiny-llama", tmp_path, device="cpu"), TEXT, config, steps=(0, 2))
    assert after["evals"] == fresh["evals"]


def fed_inputs(lm):
    """The token ids of every forward pass of `lm`, for a `with` block."""
    import contextlib

    @contextlib.contextmanager
    def spy():
        fed = []
        hook = lm.model.model.embed_tokens.register_forward_pre_hook(lambda m, args: fed.append(args[0][0].tolist()))
        try:
            yield fed
        finally:
            hook.remove()
    return spy()


@pytest.mark.parametrize("model", ["tiny-llama-bos", "tiny-llama"])
def test_in_context_starts_from_the_scoring_prefix_and_ends_each_neighbour_with_eos(tmp_path, model):
    """The in-context window is the no-context score's window with the neighbours put between its scoring prefix
    and the document, so the neighbours' text is the only difference: position 0 holds the prefix token and the
    document follows an EOS, as it follows the prefix when scored alone."""
    lm = load_language_model(model, tmp_path, device="cpu")
    tok = lambda text: lm.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    doc, near, far = "the cat sat.", "a near text.", "a far text."
    eos = lm.tokenizer.eos_token_id
    with fed_inputs(lm) as fed:
        scored = in_context(lm, doc, [near, far])
    assert fed == [([lm.prefix_token_id] + tok(far) + [eos] + tok(near) + [eos] + tok(doc))[:-1]]
    assert scored["context_tokens"] == len(tok(far) + tok(near)) + 2 and scored["n_bytes"] == len(doc.encode())
    # No room for a neighbour (the document and its prefix fill the context), no neighbours, empty neighbours:
    # exactly the document scored alone.
    alone = score_text(lm, doc)["loglik"]
    assert in_context(lm, doc, [near, far], context=len(tok(doc)) + 1)["loglik"] == alone
    assert in_context(lm, doc, [])["loglik"] == alone and in_context(lm, doc, ["", ""])["loglik"] == alone
    # Short of room, the neighbours are cut (nearest kept, from its end) and each cut one keeps its EOS.
    with fed_inputs(lm) as fed:
        cut = in_context(lm, doc, [near, far], context=len(tok(doc)) + 1 + 5)
    assert fed == [([lm.prefix_token_id] + tok(near)[-4:] + [eos] + tok(doc))[:-1]] and cut["context_tokens"] == 5


def test_the_official_in_context_concatenation_is_kept_as_a_named_option(tmp_path):
    lm = load_language_model("tiny-llama-bos", tmp_path, device="cpu")
    tok = lambda text: lm.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    doc, texts = "the cat sat.", ["a near text.", "a far text."]
    for keep, context in (("nearest", None), ("official", None), ("nearest", 20), ("official", 20)):
        window = context or lm.context_length
        old = in_context_prefix([tok(t) for t in texts], window - len(tok(doc)), keep)  # the plain concatenation
        expected = token_logprobs(lm.model, tok(doc), lm.prefix_token_id, window, old).sum()
        official = in_context(lm, doc, texts, context, keep, join="official")
        assert official["loglik"] == float(expected) and official["context_tokens"] == len(old)
    with pytest.raises(ValueError, match="invalid join='space'"):
        in_context(lm, doc, texts, join="space")


def test_baseline_rows_are_keyed_by_the_version_of_their_code(tiny_params, monkeypatch):
    from ttt_core.study import prepare

    study = prepare(StudyConfig.from_params(**tiny_params), progress=False)
    assert baselines.baseline_settings(study)["baselines_version"] == baselines.BASELINES_VERSION >= 2
    key = baselines.baselines_key(study)
    monkeypatch.setattr(baselines, "BASELINES_VERSION", baselines.BASELINES_VERSION + 1)
    assert baselines.baselines_key(study) != key
    assert baselines.baselines_key(study, joins=("official",)) != baselines.baselines_key(study)
