import math

import pytest
import torch

from ttt_core.config import StudyConfig
from ttt_core.metrics import score_text
from ttt_core.models import load_language_model
from ttt_core.retrieve import Neighbor
from ttt_core.ttt import (make_optimizer, reset_weights, snapshot_weights, split_query_and_scored, train_on_text,
                          training_chunks)
from ttt_core.ttt import test_time_train as run_ttt_nn  # aliased: pytest would collect test_*

TEXT = "the cat sat on the mat. " * 12


@pytest.fixture
def lm(tmp_path):
    return load_language_model("tiny-llama", tmp_path, device="cpu")


def neighbors(n=3):
    return [Neighbor(i, f"n{i}", "prose", 0.1 * i, TEXT) for i in range(n)]


def test_training_chunks_are_disjoint_max_length_pieces(lm):
    tokens = lm.tokenizer("x" * 25, add_special_tokens=False)["input_ids"]
    chunks = training_chunks(lm.tokenizer, "x" * 25, 10)
    assert [len(c) for c in chunks] == [10, 10, 5] and sum(chunks, []) == tokens
    assert [len(c) for c in training_chunks(lm.tokenizer, "x" * 21, 10)] == [10, 10]  # 1-token tail skipped


def test_one_optimizer_step_per_chunk(lm):
    config = StudyConfig(max_length=100, learning_rate=1e-3)
    optimizer = make_optimizer(lm.model, config)
    train_on_text(lm, TEXT, optimizer, config)  # 288 bytes -> 3 chunks of <= 100 tokens
    steps = {int(s["step"]) for s in optimizer.state.values()}
    assert steps == {math.ceil(len(TEXT) / 100)}


def test_training_on_neighbours_lowers_bpb_and_weights_are_restored(lm):
    config = StudyConfig(k=3, learning_rate=3e-3, max_length=128, eval_ks=(0, 1, 3))
    before = snapshot_weights(lm.model)
    row = run_ttt_nn(lm, {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT},
                          neighbors(), config)
    assert [e["k"] for e in row["evals"]] == [0, 1, 3]
    logliks = [e["loglik"] for e in row["evals"]]
    assert logliks[0] < logliks[1] < logliks[2]  # the neighbours are the document itself: it must help
    assert row["n_bytes"] == len(TEXT.encode()) and len(row["train_loss"]) == 3 == len(row["train_seconds"])
    assert all(torch.equal(p, b) for p, b in zip(lm.model.parameters(), before))


def test_reset_weights_restores_in_place_and_keeps_ties(lm):
    snapshot = snapshot_weights(lm.model)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(1.0)
    reset_weights(lm.model, snapshot)
    assert all(torch.equal(p, s) for p, s in zip(lm.model.parameters(), snapshot))
    assert lm.model.lm_head.weight.data_ptr() == lm.model.model.embed_tokens.weight.data_ptr()


def test_optimizer_state_is_reset_by_default_and_kept_on_request(lm):
    doc = {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}
    fresh = StudyConfig(k=2, learning_rate=1e-3)
    shared = make_optimizer(lm.model, fresh)
    run_ttt_nn(lm, doc, neighbors(2), fresh, shared)
    assert shared.state and all(not v.any() for s in shared.state.values() for v in s.values() if torch.is_tensor(v))
    official = StudyConfig(k=2, learning_rate=1e-3, reset_optimizer=False)
    run_ttt_nn(lm, doc, neighbors(2), official, shared)
    run_ttt_nn(lm, doc, neighbors(2), official, shared)
    # moments carried across 2 documents x 2 neighbours x 2 chunks (288 tokens, 256-token context)
    assert {int(s["step"]) for s in shared.state.values()} == {8}


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_an_optimizer_reset_in_place_gives_exactly_a_fresh_optimizers_result(lm, optimizer):
    """A run shares one optimizer and zeroes its state between documents: the second document's row must be
    bit for bit the row a fresh optimizer gives."""
    config = StudyConfig(k=2, learning_rate=1e-3, optimizer=optimizer)
    first = {"id": "a", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT[::-1]}
    second = {"id": "b", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}
    shared = make_optimizer(lm.model, config)
    run_ttt_nn(lm, first, neighbors(2), config, shared)
    reused = run_ttt_nn(lm, second, neighbors(2), config, shared)
    fresh = run_ttt_nn(lm, second, neighbors(2), config)
    assert reused["evals"] == fresh["evals"] and reused["train_loss"] == fresh["train_loss"]


def test_same_seed_same_result(lm):
    config = StudyConfig(k=2, learning_rate=1e-3)
    doc = {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}
    a = run_ttt_nn(lm, doc, neighbors(2), config)
    b = run_ttt_nn(lm, doc, neighbors(2), config)
    assert a["evals"] == b["evals"]


def test_split_query_keeps_the_scored_part_out_of_the_query(lm):
    text = "abcdefghij" * 5
    query, scored = split_query_and_scored(lm.tokenizer, text)
    assert query + scored == text and len(query) == 25
    query, scored = split_query_and_scored(lm.tokenizer, text, max_query_tokens=10)
    assert query == text[:10] and scored == text[10:]


def test_split_query_cuts_at_a_character_and_never_puts_scored_bytes_in_the_query(lm):
    for text in ("a€€b" * 3, "é😀" * 4, "x€", "ab😀cd"):
        tokens = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        query, scored = split_query_and_scored(lm.tokenizer, text)
        assert query + scored == text and query and "\ufffd" not in query + scored
        # the query is at most its len(tokens) // 2 byte tokens; the scored part is whole text, bytes counted exactly
        assert len(query.encode()) <= len(tokens) // 2
        assert score_text(lm, scored)["n_bytes"] == len(text.encode()) - len(query.encode())
    with pytest.raises(ValueError, match="split_query needs a test document"):
        split_query_and_scored(lm.tokenizer, "€")  # 3 byte tokens, the first half inside the only character


def test_training_chunks_never_exceed_the_model_context(tmp_path):
    gpt2 = load_language_model("tiny-gpt2", tmp_path, device="cpu")  # 128 positions
    config = StudyConfig(max_length=512, learning_rate=1e-3)
    optimizer = make_optimizer(gpt2.model, config)
    assert math.isfinite(train_on_text(gpt2, "y" * 300, optimizer, config)[0])
    assert {int(s["step"]) for s in optimizer.state.values()} == {3}  # 128 + 128 + 44 tokens


def test_every_training_chunk_starts_with_bos_when_the_tokenizer_adds_one(tmp_path):
    """Gemma's convention: a tokenizer that prefixes BOS gets it on every training chunk, counted in max_length."""
    lm = load_language_model("tiny-llama-bos", tmp_path, device="cpu")
    bos = lm.tokenizer.bos_token_id
    assert lm.bos_token_id == bos is not None and lm.tokenizer("ab")["input_ids"][0] == bos
    fed = []
    hook = lm.model.model.embed_tokens.register_forward_pre_hook(lambda module, args: fed.append(args[0][0].tolist()))
    config = StudyConfig(max_length=100, learning_rate=1e-3)
    optimizer = make_optimizer(lm.model, config)
    train_on_text(lm, TEXT, optimizer, config)  # 288 text tokens -> 99 + 99 + 90, each after a BOS
    hook.remove()
    assert [len(ids) for ids in fed] == [100, 100, 91]
    assert all(ids[0] == bos and bos not in ids[1:] for ids in fed)
    assert sum((ids[1:] for ids in fed), []) == lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    # train_with_bos=False is method version 1: plain text chunks
    fed.clear()
    hook = lm.model.model.embed_tokens.register_forward_pre_hook(lambda module, args: fed.append(args[0][0].tolist()))
    train_on_text(lm, TEXT, optimizer, StudyConfig(max_length=100, learning_rate=1e-3, train_with_bos=False))
    hook.remove()
    assert [len(ids) for ids in fed] == [100, 100, 88] and all(bos not in ids for ids in fed)


def test_a_tokenizer_without_bos_trains_on_plain_text_chunks(lm):
    assert lm.bos_token_id is None  # GPT-2-style: the paper's configuration is unchanged
    assert training_chunks(lm.tokenizer, "x" * 25, 10, lm.bos_token_id) == training_chunks(lm.tokenizer, "x" * 25, 10)
    with_bos = training_chunks(lm.tokenizer, "x" * 19, 10, bos_token_id=7)
    assert [len(c) for c in with_bos] == [10, 10, 2] and all(c[0] == 7 for c in with_bos)  # BOS + 1 token: a target


def test_adafactor_trains_restores_and_keeps_far_less_state_than_adamw(lm):
    """The 'adafactor' deviation: same loop, lower bits per byte on the document itself, weights restored, and an
    optimizer state much smaller than AdamW's two full moments."""
    config = StudyConfig(k=3, learning_rate=3e-3, max_length=128, eval_ks=(0, 3), optimizer="adafactor")
    before = snapshot_weights(lm.model)
    row = run_ttt_nn(lm, {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}, neighbors(), config)
    logliks = [e["loglik"] for e in row["evals"]]
    assert logliks[0] < logliks[1]
    assert all(torch.equal(p, b) for p, b in zip(lm.model.parameters(), before))

    def state_numel(optimizer):
        train_on_text(lm, TEXT, optimizer, config)
        reset_weights(lm.model, before)
        return sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))

    adam = state_numel(make_optimizer(lm.model, StudyConfig()))
    factored = state_numel(make_optimizer(lm.model, config))
    assert isinstance(make_optimizer(lm.model, config), torch.optim.Adafactor)
    assert factored < adam / 4


def test_reused_gradients_skip_the_forward_pass_of_a_repeated_text(lm):
    """HullFT's multiset repeats a text; with reuse_gradients its gradient is computed once per run of repeats."""
    calls = []
    hook = lm.model.register_forward_hook(lambda *a: calls.append(1))
    same = Neighbor(0, "same", "prose", 0.1, "the cat sat on the mat. " * 2)  # one chunk each
    other = Neighbor(9, "other", "prose", 0.5, "a different text about dogs. ")
    steps = [same] * 3 + [other]
    document = {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}
    before = snapshot_weights(lm.model)
    passes = {}
    for reuse in (False, True):
        calls.clear()
        config = StudyConfig(k=4, learning_rate=1e-3, max_length=128, eval_ks=(0,), reuse_gradients=reuse)
        row = run_ttt_nn(lm, document, steps, config)
        passes[reuse] = len(calls)  # scoring at k=0 and k=4 plus one pass per step computed
        assert row["train_steps"] == [1, 1, 1, 1] and len(row["train_loss"]) == 4
        assert all(torch.equal(p, b) for p, b in zip(lm.model.parameters(), before))
    hook.remove()
    assert passes[False] - passes[True] == 2  # the second and third copies reuse the first one's gradient


def test_restoring_from_the_models_file_gives_exactly_what_a_copy_in_memory_gives(lm, tmp_path):
    import dataclasses

    lm.model.save_pretrained(tmp_path / "folder")  # a local model folder with one safetensors file
    lm.tokenizer.save_pretrained(tmp_path / "folder")
    local = load_language_model(str(tmp_path / "folder"), tmp_path, device="cpu")
    assert local.weights_file == tmp_path / "folder" / "model.safetensors" and lm.weights_file is None
    before = [p.detach().clone() for p in local.model.parameters()]
    config = StudyConfig(k=3, learning_rate=1e-3, max_length=64, eval_ks=(0, 1, 3))
    document = {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}
    in_memory = run_ttt_nn(local, document, neighbors(), config)
    from_file = run_ttt_nn(local, document, neighbors(), dataclasses.replace(config, weights_snapshot="file"))
    assert from_file["evals"] == in_memory["evals"] and from_file["train_loss"] == in_memory["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(before, local.model.parameters()))
    assert config.run_key("c") == dataclasses.replace(config, weights_snapshot="file").run_key("c")
    with torch.no_grad():
        next(local.model.parameters()).add_(1.0)  # the weights are no longer the file's: refused, not restored
    with pytest.raises(ValueError, match="does not hold the model's current weight"):
        run_ttt_nn(local, document, neighbors(), dataclasses.replace(config, weights_snapshot="file"))
    with pytest.raises(ValueError, match="invalid weights_snapshot='file' for model 'tiny-llama'"):
        run_ttt_nn(lm, document, neighbors(), dataclasses.replace(config, weights_snapshot="file"))
    with pytest.raises(ValueError, match="invalid weights_snapshot='disk'"):
        dataclasses.replace(config, weights_snapshot="disk").validate()


def fail_once(real, failure, at: int = 0):
    """`real`, raising `failure` on its call number `at` (0: the first) and working otherwise."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == at + 1:
            raise failure
        return real(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("failure", [RuntimeError("CUDA out of memory"), KeyboardInterrupt()],
                         ids=["out-of-memory", "interrupt"])
@pytest.mark.parametrize("where, at", [("clip", 0), ("clip", 2), ("step", 1)])
def test_gradients_never_survive_a_failed_document(tmp_path, monkeypatch, failure, where, at):
    """A failure after backward() (in clipping, or in the optimizer's step), on the first step or after some:
    the next document on the same model and optimizer gives exactly a fresh model's row."""
    lm = load_language_model("tiny-llama", tmp_path, device="cpu")
    config = StudyConfig(k=2, learning_rate=1e-3, max_length=128, eval_ks=(0, 2))
    shared = make_optimizer(lm.model, config)
    first = {"id": "a", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT[::-1]}
    second = {"id": "b", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}
    before = snapshot_weights(lm.model)
    if where == "clip":
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", fail_once(torch.nn.utils.clip_grad_norm_, failure, at))
    else:
        shared.step = fail_once(shared.step, failure, at)
    with pytest.raises(type(failure)):
        run_ttt_nn(lm, first, neighbors(2), config, shared)
    assert all(p.grad is None for p in lm.model.parameters())
    assert all(torch.equal(p, b) for p, b in zip(lm.model.parameters(), before))
    after = run_ttt_nn(lm, second, neighbors(2), config, shared)
    fresh = run_ttt_nn(load_language_model("tiny-llama", tmp_path, device="cpu"), second, neighbors(2), config)
    assert after["evals"] == fresh["evals"] and after["train_loss"] == fresh["train_loss"]


def test_the_weights_snapshot_is_taken_once_per_loaded_model(lm, monkeypatch):
    import ttt_core.ttt as ttt

    taken = []
    real = ttt.snapshot_weights
    monkeypatch.setattr(ttt, "snapshot_weights", lambda *a, **k: taken.append(1) or real(*a, **k))
    config = StudyConfig(k=1, learning_rate=1e-3, max_length=128, eval_ks=(0, 1))
    for doc_id in "abc":
        run_ttt_nn(lm, {"id": doc_id, "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}, neighbors(1), config)
    assert len(taken) == 1


def test_a_document_never_starts_from_changed_weights_or_leftover_gradients(lm):
    config = StudyConfig(k=1, learning_rate=1e-3, max_length=128, eval_ks=(0, 1))
    document = {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": TEXT}
    reference = run_ttt_nn(lm, document, neighbors(1), config)
    lm.model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()  # stale grads
    with pytest.warns(UserWarning, match="gradients left over"):
        repaired = run_ttt_nn(lm, document, neighbors(1), config)
    assert repaired["evals"] == reference["evals"]
    with torch.no_grad():
        next(lm.model.parameters()).add_(1.0)  # trained outside a document and never restored: refused
    with pytest.raises(ValueError, match="differ from the weights it was loaded with"):
        run_ttt_nn(lm, document, neighbors(1), config)
