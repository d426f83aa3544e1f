import math

import numpy as np
import pandas as pd
import pytest
import torch

from ttt_core.metrics import (PILE_WEIGHTS, bits_per_byte, bootstrap_bpb, bpb_table, domain_bpb,
                              loglikelihood_rolling, pile_weighted, rolling_windows)
from ttt_core.models import tiny_model


def lm_eval_rolling_windows(token_list, prefix_token, max_seq_len, context_len=1):
    """lm-evaluation-harness utils.get_rolling_token_windows + make_disjoint_window, transcribed."""
    pred_len = max_seq_len - context_len + 1
    predicted = 0
    first_seq_len = min(max_seq_len, len(token_list))
    out = [([prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len])]
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        out.append((token_list[window_end - max_seq_len - 1: window_end - 1],
                    token_list[window_end - window_pred_len: window_end]))
        predicted += window_pred_len
    return [(a[: len(a) - (len(b) - 1)], b) for a, b in out]


@pytest.mark.parametrize("n, window", [(1, 4), (4, 4), (5, 4), (23, 4), (100, 7), (7, 100)])
def test_rolling_windows_match_lm_eval_and_score_every_token_once(n, window):
    tokens = list(range(10, 10 + n))
    windows = rolling_windows(tokens, 0, window)
    assert windows == lm_eval_rolling_windows(tokens, 0, window)
    assert [t for _, targets in windows for t in targets] == tokens
    assert all(len(ctx) + len(tgt) - 1 <= window for ctx, tgt in windows)
    if n > window:  # the last window is filled with preceding context up to the window size
        ctx, tgt = windows[-1]
        assert len(ctx) + len(tgt) - 1 == window


def test_rolling_loglikelihood_equals_one_forward_pass_when_the_text_fits():
    model, _ = tiny_model("tiny-llama")
    tokens = list(torch.randint(0, 256, (40,)).tolist())
    rolled = loglikelihood_rolling(model, tokens, 256, max_len=64)
    with torch.no_grad():
        logits = model(torch.tensor([[256] + tokens[:-1]])).logits[0]
    direct = torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens)[:, None]).sum().item()
    assert rolled == pytest.approx(direct, rel=1e-5)
    # Short windows score the same tokens with less context: a different, still finite, number.
    assert math.isfinite(loglikelihood_rolling(model, tokens, 256, max_len=8))


def test_bits_per_byte_definition():
    assert bits_per_byte(-math.log(2) * 10, 10) == pytest.approx(1.0)


def frame():
    return pd.DataFrame([
        {"doc_id": "a", "domain": "code", "k": 0, "loglik": -100.0, "n_bytes": 100},
        {"doc_id": "b", "domain": "code", "k": 0, "loglik": -50.0, "n_bytes": 300},
        {"doc_id": "a", "domain": "code", "k": 1, "loglik": -80.0, "n_bytes": 100},
        {"doc_id": "b", "domain": "code", "k": 1, "loglik": -40.0, "n_bytes": 300},
        {"doc_id": "c", "domain": "books", "k": 0, "loglik": -200.0, "n_bytes": 100},
        {"doc_id": "c", "domain": "books", "k": 1, "loglik": -190.0, "n_bytes": 100},
    ])


def test_domain_bpb_pools_bytes_over_documents():
    bpb = domain_bpb(frame()).set_index(["domain", "k"])["bpb"]
    assert bpb[("code", 0)] == pytest.approx(150 / 400 / math.log(2))  # not the mean of per-doc bpbs


def test_pile_weighted_uses_the_paper_weights_and_splits_shared_tasks():
    bpb = pd.Series({"code": 1.0, "books": 2.0, "more_books": 4.0})
    names = {"code": "github", "books": "gutenberg", "more_books": "gutenberg"}
    w_code, w_books = PILE_WEIGHTS["github"], PILE_WEIGHTS["gutenberg"] / 2
    expected = (1.0 * w_code + 2.0 * w_books + 4.0 * w_books) / (w_code + 2 * w_books)
    assert pile_weighted(bpb, names) == pytest.approx(expected)


def test_table_and_bootstrap_intervals_bracket_the_estimate():
    names = {"code": "github", "books": "gutenberg"}
    table = bpb_table(frame(), names)
    assert list(table.columns) == [0, 1] and "Pile-weighted" in table.index
    intervals = bootstrap_bpb(frame(), names, samples=200, seed=1)
    for _, row in intervals.iterrows():
        assert row["low"] - 1e-9 <= table.loc[row["domain"], row["k"]] <= row["high"] + 1e-9
    single = intervals[(intervals.domain == "books")]
    np.testing.assert_allclose(single["low"], single["high"])  # one document: no spread
