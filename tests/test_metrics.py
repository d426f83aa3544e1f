import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ttt_core.metrics import (FAMILY_CLAIMS, MIN_DOCUMENTS, MIN_SOURCES, PILE_WEIGHTS, bits_per_byte,
                              bootstrap_bpb, bootstrap_draws, bootstrap_mean, bootstrap_p_value, bpb_table,
                              documents_at, domain_bpb, domain_changes, loglikelihood_rolling, paired_change,
                              pile_weighted, relative_change, rolling_windows, score_text, ttt_change)
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
    for _, row in intervals[intervals.domain == "code"].iterrows():
        assert row["low"] - 1e-9 <= table.loc[row["domain"], row["k"]] <= row["high"] + 1e-9
    single = intervals[(intervals.domain == "books")]
    assert single["low"].isna().all() and single["high"].isna().all()  # one document: no interval


def one_document_per_domain():
    """Six domains, one document each, every document 2 %, 4 %, ... 12 % better at k = 1."""
    rows = []
    for i, domain in enumerate(["code", "books", "math", "law", "web", "wiki"]):
        before = -100.0 - 10 * i
        rows += [{"doc_id": f"d{i}", "domain": domain, "k": 0, "loglik": before, "n_bytes": 100 + i},
                 {"doc_id": f"d{i}", "domain": domain, "k": 1, "loglik": before * (1 - 0.02 * (i + 1)),
                  "n_bytes": 100 + i}]
    return pd.DataFrame(rows)


NAMES = {"code": "github", "books": "gutenberg", "math": "dm-mathematics", "law": "freelaw", "web": "pile-cc",
         "wiki": "wikipedia"}


def test_paired_change_gives_an_interval_with_one_document_per_domain():
    change = ttt_change(one_document_per_domain(), 1, NAMES, samples=1000, seed=0)
    assert change.percent == pytest.approx(-7.0) and change.n_documents == 6 and change.share_lower == 1
    assert change.percent_low < change.percent < change.percent_high < 0  # resampled across domains
    assert change.excludes_zero and "the 95 % interval excludes zero" in change.describe()
    # the Pile-weighted point estimate is the bpb table's, and its within-domain interval is degenerate here
    table = bpb_table(one_document_per_domain(), NAMES)
    assert change.pile_before == pytest.approx(table.loc["Pile-weighted", 0])
    assert change.pile == pytest.approx(relative_change(table.loc["Pile-weighted", 0], table.loc["Pile-weighted", 1]))
    assert math.isnan(change.pile_low) and math.isnan(change.pile_high)  # no spread: no interval


def test_paired_change_says_when_its_interval_includes_zero():
    frame = one_document_per_domain()
    after = frame["k"] == 1
    frame.loc[after, "loglik"] = frame.loc[after, "loglik"] * np.array([0.9, 1.1, 0.95, 1.05, 0.97, 1.03]) / \
        (1 - 0.02 * np.arange(1, 7))
    change = ttt_change(frame, 1, NAMES, samples=500)
    assert change.percent_low < 0 < change.percent_high and not change.excludes_zero
    assert "the 95 % interval includes zero" in change.describe() and "not resolved" in change.describe()


def test_paired_change_refuses_different_documents():
    frame = one_document_per_domain()
    with pytest.raises(ValueError, match="same documents"):
        paired_change(documents_at(frame, 0), documents_at(frame[frame.doc_id != "d0"], 1), NAMES)


def test_pile_interval_resamples_within_domains_when_there_are_several_documents():
    frame = pd.concat([one_document_per_domain(), one_document_per_domain().assign(
        doc_id=lambda f: f.doc_id + "b", loglik=lambda f: f.loglik * np.where(f.k == 1, 0.97, 1.0))])
    change = ttt_change(frame, 1, NAMES, samples=500)
    assert change.pile_low < change.pile < change.pile_high


def test_bootstrap_mean_is_seeded_and_brackets_the_mean():
    values = [1.0, 2.0, 3.0, 10.0]
    assert bootstrap_mean(values, 300, seed=3) == bootstrap_mean(values, 300, seed=3)
    mean, low, high = bootstrap_mean(values, 300)
    assert mean == 4.0 and low < mean < high


def test_rolling_bits_per_byte_equal_lm_evaluation_harness(tmp_path):
    """Our rolling log-likelihood against lm-eval 0.4's own HFLM.loglikelihood_rolling, several windows."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from ttt_core.models import load_language_model

    lm = load_language_model("tiny-llama", tmp_path, device="cpu")
    text = "Test-time training on nearest neighbours, scored in rolling windows. " * 9  # 630 byte tokens
    ours = score_text(lm, text, eval_context=64)
    assert ours["n_tokens"] > 5 * 64  # many windows, the last one partial
    harness = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, max_length=64, batch_size=1, device="cpu")
    assert harness.prefix_token_id == lm.prefix_token_id
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    [theirs] = harness.loglikelihood_rolling([request], disable_tqdm=True)
    assert ours["loglik"] == pytest.approx(theirs, rel=1e-5)


def test_pile_interval_pairs_each_document_with_itself():
    """Every document 3 % better: paired draws give exactly -3 % in every resample, also when the after-frame's
    rows come in another order; unpaired draws would spread."""
    frame = pd.concat([one_document_per_domain(), one_document_per_domain().assign(doc_id=lambda f: f.doc_id + "b")])
    before = frame[frame.k == 0].assign(k=1)
    after = before.assign(loglik=before.loglik * 0.97).sample(frac=1, random_state=0)
    change = paired_change(documents_at(before, 1), documents_at(after, 1), NAMES, samples=300)
    assert change.pile == pytest.approx(-3.0) and change.percent == pytest.approx(-3.0)
    assert math.isnan(change.pile_low) and math.isnan(change.pile_high)  # every draw -3 %: no spread


def test_one_document_is_never_a_finding():
    frame = one_document_per_domain()
    change = ttt_change(frame[frame.doc_id == "d0"], 1, NAMES, samples=50)
    assert change.percent_low == change.percent_high and not change.excludes_zero and not change.resolved
    assert "no interval" in change.describe() and "1 of 1 documents differ" in change.describe()


# ------------------------------------------------------------------------------------ verdicts and their evidence
def paired_frame(changes, groups=None, domains=None):
    """Long frame, k = 0 and k = 1, one document per entry of `changes` (relative change of its loglik)."""
    rows = []
    for i, c in enumerate(changes):
        domain = (domains or NAMES_LIST)[i % len(domains or NAMES_LIST)]
        group = groups[i] if groups is not None else f"g{i}"
        before = -100.0 - 7 * i
        rows += [{"doc_id": f"d{i}", "domain": domain, "group": group, "k": 0, "loglik": before, "n_bytes": 100 + i},
                 {"doc_id": f"d{i}", "domain": domain, "group": group, "k": 1, "loglik": before * (1 + c),
                  "n_bytes": 100 + i}]
    return pd.DataFrame(rows)


NAMES_LIST = list(NAMES)


def test_verdict_interval_is_95_percent_with_the_papers_10_90_beside():
    rng = np.random.default_rng(0)
    change = ttt_change(paired_frame(list(-0.05 + 0.03 * rng.standard_normal(24))), 1, NAMES, samples=2000)
    assert change.percent_low < change.percent_p10 < change.percent < change.percent_p90 < change.percent_high
    draws = bootstrap_draws(relative_change(documents_at(paired_frame([0] * 24), 0)["bpb"], 1), 10, 0)
    assert draws.shape == (10,)


def test_a_verdict_needs_enough_documents_that_differ_and_two_sources():
    # 3 of 13 documents differ (all three much lower): not a finding, and the sentence says 3 differ, not 13
    leak = ttt_change(paired_frame([0.0] * 10 + [-0.3, -0.25, -0.2]), 1, NAMES, samples=1000)
    assert leak.n_differ == 3 and not leak.excludes_zero and not leak.resolved
    assert "3 of 13 documents differ" in leak.describe()
    assert f"a verdict needs {MIN_DOCUMENTS} documents that differ" in leak.describe()
    assert f"fewer than the {MIN_DOCUMENTS}" in leak.interval_text()  # the reason, where no count precedes it
    # eight chunks of one source, all lower: one source is not independent evidence
    one_source = ttt_change(paired_frame([-0.1 - 0.01 * i for i in range(8)], groups=["s"] * 8), 1, NAMES)
    assert one_source.n_sources_differ == 1 and not one_source.excludes_zero and not one_source.resolved
    assert "from 1 of 1 sources" in one_source.describe() and f"from {MIN_SOURCES} sources" in one_source.describe()
    assert f"fewer than the {MIN_SOURCES}" in one_source.interval_text()
    # two documents: never "the interval excludes zero"
    two = ttt_change(paired_frame([-0.1, -0.2]), 1, NAMES)
    assert not two.excludes_zero and "the 95 % interval excludes zero" not in two.describe()


def test_bootstrap_p_value_is_two_sided_with_the_plus_one_correction():
    assert bootstrap_p_value(np.full(999, -1.0)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(np.array([-1.0, 1.0] * 500)) == 1.0
    assert bootstrap_p_value(np.array([-1.0] * 900 + [1.0] * 100)) == pytest.approx(2 * 101 / 1001)


def test_the_verdict_is_corrected_for_the_family_of_claims():
    strong = ttt_change(paired_frame([-0.1 - 0.01 * i for i in range(12)]), 1, NAMES, samples=1000)
    assert strong.resolved and strong.family_p == pytest.approx(min(1, strong.p_value * FAMILY_CLAIMS))
    borderline = dataclasses.replace(strong, p_value=0.01)  # 95 % excludes zero, Bonferroni over the family not
    assert borderline.excludes_zero and not borderline.resolved and "not resolved" in borderline.describe()
    # too few draws can never reach the family's threshold: said, not silently "not resolved"
    few = ttt_change(paired_frame([-0.1 - 0.01 * i for i in range(12)]), 1, NAMES, samples=100)
    assert not few.resolved and "bootstrap draws" in few.describe()


def test_paired_change_refuses_documents_whose_bytes_differ():
    frame = paired_frame([-0.1] * 8)
    after = documents_at(frame, 1)
    after.loc["d3", "n_bytes"] += 1
    with pytest.raises(ValueError, match="d3"):
        paired_change(documents_at(frame, 0), after, NAMES)


@pytest.mark.parametrize("function", ["documents_at", "bootstrap_bpb", "domain_bpb", "bpb_table"])
def test_duplicate_rows_are_refused_not_averaged(function):
    frame = paired_frame([-0.1] * 4)
    doubled = pd.concat([frame, frame[(frame.doc_id == "d2") & (frame.k == 1)].assign(loglik=-1.0)])
    call = {"documents_at": lambda f: documents_at(f, 1), "bootstrap_bpb": lambda f: bootstrap_bpb(f, NAMES, 20),
            "domain_bpb": domain_bpb, "bpb_table": lambda f: bpb_table(f, NAMES)}[function]
    with pytest.raises(ValueError, match="'d2'"):
        call(doubled)


def test_one_document_intervals_are_not_intervals():
    frame = paired_frame([-0.1, -0.2, -0.15, -0.12, -0.3, -0.11])  # one document per domain
    change = ttt_change(frame, 1, NAMES)
    assert math.isnan(change.pile_low) and math.isnan(change.pile_high)
    assert change.as_row()["Pile low %"] == "no interval (one document)"
    table = domain_changes(documents_at(frame, 0), documents_at(frame, 1))
    assert table["low %"].isna().all() and table["high %"].isna().all()
    assert math.isnan(bootstrap_bpb(frame, NAMES, 20).set_index(["domain", "k"]).loc[("code", 1), "low"])


# ------------------------------------------------------------------------ bytes of the scored tokens (score_text)
MULTIBYTE = "aé€😀b c"  # 1-, 2-, 3- and 4-byte characters: 1 + 2 + 3 + 4 + 1 + 1 + 1 = 13 bytes


def byte_level_tokenizer_with_merges():
    """A GPT-2-style byte-level BPE whose merges make tokens that end inside a character: 'Ġâ' is a space and
    the first byte of '€' (GPT-2's vocabulary has many such tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab |= {"Ġâ": len(vocab), "Ĥ¬": len(vocab) + 1, "<|endoftext|>": len(vocab) + 2}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "â"), ("Ĥ", "¬")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def sentencepiece_like_tokenizer():
    """A SentencePiece-style tokenizer as Llama's and Gemma's fast tokenizers are built: '▁' for a space, a few
    whole characters as pieces (one of them the 2-byte 'é'), every other byte as a <0xNN> byte-fallback piece."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list("▁abcdefghijklmnopqrstuvwxyzé")
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[], unk_token="<unk>",
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def language_model_for(tokenizer):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ttt_core.models import LanguageModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return LanguageModel(model, tokenizer, "test", torch.device("cpu"), 256, prefix, {})


def test_a_capped_text_counts_the_bytes_of_its_scored_tokens_never_of_a_decoded_cut(tmp_path):
    """The issue's case: "ab€" cut at 3 byte tokens scores 'a', 'b' and the first byte of '€': 3 bytes, not the
    5 of the decoded 'ab\ufffd'."""
    from ttt_core.models import load_language_model

    lm = load_language_model("tiny-gpt2", tmp_path, device="cpu")
    capped = score_text(lm, "ab€", max_eval_tokens=3)
    assert capped["n_tokens"] == 3 and capped["n_bytes"] == 3
    tokens = lm.tokenizer("ab€", add_special_tokens=False)["input_ids"]
    assert capped["loglik"] == loglikelihood_rolling(lm.model, tokens[:3], lm.prefix_token_id, lm.context_length)
    # a byte-level tokenizer without merges: every token is one byte, whatever character it is part of
    for n in range(1, len(MULTIBYTE.encode())):
        assert score_text(lm, MULTIBYTE, max_eval_tokens=n)["n_bytes"] == n
    assert score_text(lm, MULTIBYTE, max_eval_tokens=99)["n_bytes"] == len(MULTIBYTE.encode())


# byte-level: 'Ġâ' ends inside ' €' (a space and 0xE2); SentencePiece-like: 'é' a piece, '€' and '😀' byte pieces
@pytest.mark.parametrize("make", [byte_level_tokenizer_with_merges, sentencepiece_like_tokenizer])
def test_every_cut_counts_exactly_the_bytes_its_tokens_stand_for(make):
    tokenizer = make()
    text = "aé€😀b €c 😀"
    lm = language_model_for(tokenizer)
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    counts = [score_text(lm, text, max_eval_tokens=n)["n_bytes"] for n in range(1, len(tokens) + 1)]
    # An independent oracle: a token's bytes are those its own piece spells (byte-level alphabet, <0xNN>, '▁').
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {ch: b for b, ch in bytes_to_unicode().items()}

    def piece_bytes(piece):
        if piece.startswith("<0x") and piece.endswith(">"):
            return 1
        if make is byte_level_tokenizer_with_merges:
            return len(piece)  # one alphabet character per byte
        return len(piece.replace("▁", " ").encode())

    pieces = tokenizer.convert_ids_to_tokens(tokens)
    assert all(ch in to_byte for ch in "".join(pieces)) or make is sentencepiece_like_tokenizer
    assert counts == list(np.cumsum([piece_bytes(p) for p in pieces]))
    assert counts[-1] == len(text.encode())
    assert all(a < b for a, b in zip(counts, counts[1:]))


def metaspace_tokenizer(normalizer=None):
    """A SentencePiece-like tokenizer *without* byte fallback (unknown characters become <unk>), optionally
    normalising the text: its pieces do not spell the text's bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3}
    for c in "abcdefghijklmnopqrstuvwxyzé":
        vocab[c] = len(vocab)
        vocab["\u2581" + c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=False))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("normalizer", [None, "NFKC", "Lowercase"])
@pytest.mark.parametrize("text", ["日本語のテキスト ü ö é €€ end", "ﬁne ﬁsh ﬁnal ﬁx", "STRASSE ẞ İstanbul ok"])
def test_a_capped_text_whose_pieces_do_not_spell_it_counts_the_scored_span_of_the_original(normalizer, text):
    """<unk> pieces and normalisers (NFKC's 'ﬁ' -> 'fi', lowercasing 'İ') make a tokenizer's pieces spell other
    bytes than the text's: the scored bytes are then those of the original text the scored tokens cover."""
    from tokenizers import normalizers

    from ttt_core.metrics import scored_tokens

    tok = metaspace_tokenizer(getattr(normalizers, normalizer)() if normalizer else None)
    ids = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    cut = len(ids["input_ids"]) // 2
    tokens, n_bytes = scored_tokens(tok, text, cut)
    assert tokens == ids["input_ids"][:cut]
    assert n_bytes == len(text[:ids["offset_mapping"][cut - 1][1]].encode("utf-8"))
