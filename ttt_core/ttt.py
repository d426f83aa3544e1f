"""Test-time training on nearest neighbours (TTT-NN), the paper's procedure.

For one test document: score it (k = 0); train on its neighbours nearest first, one AdamW step per
`max_length`-token chunk of each neighbour (one step per neighbour when chunks fit, as the default's do) (batch 1, fp32, full fine-tuning, gradient clipping); score it again
at each k of the evaluation grid; finally, however the document ends, clear its gradients and restore the weights
from the snapshot taken once per loaded model (in memory or, with `weights_snapshot='file'`, the model's own file,
checked against the weights) and, by default, the optimizer state too.
"""
from __future__ import annotations

import contextlib
import ctypes
import time
import warnings
from pathlib import Path

import torch

from .config import StudyConfig
from .metrics import score_text
from .models import LanguageModel
from .results import ResultRow
from .retrieve import Neighbor


class FileSnapshot:
    """The weights as the model's safetensors file holds them, read back one tensor at a time to restore them: no
    second copy of the model in memory, which is what lets Qwen2.5-Coder-1.5B train in 24 GB. Checked against the
    live weights when taken, so a restore gives exactly the weights the document started from."""

    @torch.no_grad()
    def __init__(self, model: torch.nn.Module, path: Path | str):
        from safetensors import safe_open

        self.path = str(path)
        self.check(model)

    @torch.no_grad()
    def check(self, model: torch.nn.Module) -> None:
        """Raises ValueError unless the live weights are exactly the file's."""
        from safetensors import safe_open

        with safe_open(self.path, "pt") as f:
            keys = set(f.keys())
            for name, param in model.named_parameters():
                if name not in keys or not torch.equal(f.get_tensor(name).to(param.device, param.dtype), param):
                    raise ValueError(f"invalid weights_snapshot='file': {self.path} does not hold the model's current "
                                     f"weight {name!r}; use weights_snapshot='memory'")

    @torch.no_grad()
    def restore(self, model: torch.nn.Module) -> None:
        """Copy the snapshot's weights back into `model` in place (the reset after each test document)."""
        from safetensors import safe_open

        with safe_open(self.path, "pt") as f:
            for name, param in model.named_parameters():  # tied weights appear once: they stay tied
                param.copy_(f.get_tensor(name))


def snapshot_weights(model: torch.nn.Module, weights_file: Path | str | None = None) -> list[torch.Tensor] | FileSnapshot:
    """A copy of the weights in memory, or, given the file they were loaded from, a `FileSnapshot` of it."""
    if weights_file is not None:
        return FileSnapshot(model, weights_file)
    return [p.detach().clone() for p in model.parameters()]


@torch.no_grad()
def reset_weights(model: torch.nn.Module, snapshot: list[torch.Tensor] | FileSnapshot) -> None:
    """Copy the snapshot back in place: cheap, and tied weights stay tied."""
    if isinstance(snapshot, FileSnapshot):
        return snapshot.restore(model)
    for param, saved in zip(model.parameters(), snapshot):
        param.copy_(saved)


def loaded_weights(lm: LanguageModel, config: StudyConfig | None = None) -> list[torch.Tensor] | FileSnapshot:
    """The snapshot every document on `lm` starts from and is restored to: taken once per loaded model (from the
    weights its first document finds) and kept on it, never retaken from what an earlier document left. In
    memory, or with `config.weights_snapshot='file'` the model's own file (`weights_file`)."""
    path = None if config is None else weights_file(lm, config)
    kind = "memory" if path is None else "file"
    if kind not in lm.snapshots:
        lm.snapshots[kind] = snapshot_weights(lm.model, path)
    return lm.snapshots[kind]


def check_clean_start(lm: LanguageModel, snapshot: list[torch.Tensor] | FileSnapshot) -> None:
    """Before a document: gradients left by an interrupted step (which backward() would add onto) are cleared
    with a warning; weights that differ from the snapshot raise ValueError, since the document's result would
    be of other weights than the run's."""
    stale = [name for name, param in lm.model.named_parameters() if param.grad is not None]
    if stale:
        warnings.warn(f"model {lm.name!r} had gradients left over from an interrupted step ({len(stale)} weights, "
                      f"e.g. {stale[0]!r}); cleared before the document, whose first step would have added them")
        lm.model.zero_grad(set_to_none=True)
    if isinstance(snapshot, FileSnapshot):
        return snapshot.check(lm.model)
    with torch.no_grad():
        for (name, param), saved in zip(lm.model.named_parameters(), snapshot):
            if not torch.equal(param, saved):
                raise ValueError(f"the weights of model {lm.name!r} differ from the weights it was loaded with "
                                 f"(first {name!r}): changed outside a document and not restored; reload the model")


@contextlib.contextmanager
def restored_after(lm: LanguageModel, snapshot, optimizer: torch.optim.Optimizer, reset_state: bool = True):
    """One document's training, however it ends (an error, an out-of-memory, a KeyboardInterrupt): checked clean
    on entry (`check_clean_start`); on exit its gradients cleared, its weights restored from `snapshot` and the
    optimizer's state zeroed in place (with `reset_state`, or always after a failure: an abandoned document's
    moments must not reach the next one)."""
    check_clean_start(lm, snapshot)
    finished = False
    try:
        yield
        finished = True
    finally:
        lm.model.zero_grad(set_to_none=True)
        optimizer.zero_grad(set_to_none=True)
        reset_weights(lm.model, snapshot)
        if reset_state or not finished:
            reset_optimizer(optimizer)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc mallopt() parameters


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def heap_allocation():
    """While one document is trained and scored, serve large tensors from glibc's heap instead of fresh mmap()s and
    keep what is freed. Every step allocates and frees the same large tensors (each weight's gradient, logits over
    the vocabulary); a fresh mmap faults in zeroed pages on first touch, about 0.5 GB/s on this machine's VM, which
    cost Qwen2.5-Coder-0.5B about 3 s of its 10 s step (benchmarks/results.md, speedups). Afterwards the defaults
    return and the heap is trimmed, so memory between documents is as before. Changes no number; a no-op without
    glibc."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, -1)  # -1 is SIZE_MAX to glibc: never trim while inside (a finite value
    # below a step's transient memory, e.g. Qwen's 2.5 GB of gradients, would hand it back at every step)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 65536)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # mallopt freezes the dynamic threshold: set its ceiling
        libc.malloc_trim(0)


def make_optimizer(model: torch.nn.Module, config: StudyConfig) -> torch.optim.Optimizer:
    """AdamW (the paper's: lr, eps, weight decay from `config`) or, for `optimizer='adafactor'`, Adafactor."""
    if config.optimizer == "adafactor":  # a named deviation: factored second moment, for models AdamW cannot fit
        return torch.optim.Adafactor(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    # The fused kernel computes the same AdamW update, faster on a CPU than the default for-each one.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, eps=config.adam_epsilon,
                             weight_decay=config.weight_decay, fused=fused)


def reset_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Forget the moments and step counts in place: the next step is exactly a fresh optimizer's (AdamW's and
    Adafactor's fresh state is all zeros), and the state's memory, twice the weights for AdamW, is neither
    freed nor allocated and page-faulted again for the next document."""
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                value.zero_()


def training_chunks(tokenizer, text: str, max_length: int, bos_token_id: int | None = None) -> list[list[int]]:
    """The neighbour's tokens cut into disjoint chunks of at most `max_length` tokens, each one step.

    With `bos_token_id` (a tokenizer that adds BOS to every text, as Gemma's) every chunk starts with BOS, counted
    in `max_length`, as the model saw text in pretraining; without it (GPT-2) a chunk is plain text tokens. A
    chunk with a single text token has no next-token target (the official code takes a NaN-loss step on a
    1-token tail): it is skipped.
    """
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = [] if bos_token_id is None else [bos_token_id]
    span = max_length - len(prefix)
    pieces = [tokens[i:i + span] for i in range(0, len(tokens), span)]
    return [prefix + piece for piece in pieces if len(prefix) + len(piece) > 1]


def training_step(model: torch.nn.Module, ids: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float,
                  save_gradient: list | None = None) -> float:
    """One TTT-NN step on one chunk (the only definition; benchmarks time this function): next-token loss,
    backward, clipping, optimizer step. Returns the loss in nats/token. With `save_gradient`, a copy of the
    (unclipped) gradient and the loss is left in it for `reapply_gradient`."""
    try:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if save_gradient is not None:
            save_gradient[:] = [loss.item(), [None if p.grad is None else p.grad.detach().clone()
                                              for p in model.parameters()]]
        apply_gradient(model, optimizer, grad_clip)
    except BaseException:
        model.zero_grad(set_to_none=True)  # a failed step's gradient must never add onto a retry's
        raise
    return loss.item()


def apply_gradient(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """Clip the gradient's global norm to `grad_clip`, take the optimizer step, drop the gradient."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_on_text(lm: LanguageModel, text: str, optimizer: torch.optim.Optimizer,
                  config: StudyConfig, gradients: list | None = None) -> tuple[float, int]:
    """One optimizer step per chunk; returns (mean training loss in nats/token over the chunks, steps taken).
    With a `gradients` list, a one-chunk text leaves a copy of its (unclipped) gradient and loss in it, for
    `reapply_gradient` (HullFT's gradient reuse)."""
    lm.model.train()
    losses = []
    bos = lm.bos_token_id if config.train_with_bos else None
    # A model cannot take more tokens than its context (GPT-2: 1024), whatever max_length asks.
    chunks = training_chunks(lm.tokenizer, text, min(config.max_length, lm.context_length), bos)
    for chunk in chunks:
        ids = torch.tensor([chunk], device=lm.device)
        losses.append(training_step(lm.model, ids, optimizer, config.grad_clip,
                                    gradients if len(chunks) == 1 else None))
    return (sum(losses) / len(losses) if losses else float("nan")), len(losses)


def reapply_gradient(lm: LanguageModel, saved: list, optimizer: torch.optim.Optimizer, config: StudyConfig) -> float:
    """One optimizer step with the gradient saved from the previous, identical text instead of a new forward and
    backward pass (HullFT's gradient reuse, an approximation: the weights have moved since). Returns its loss."""
    loss, grads = saved
    try:
        for param, grad in zip(lm.model.parameters(), grads):
            param.grad = None if grad is None else grad.clone()
        apply_gradient(lm.model, optimizer, config.grad_clip)
    except BaseException:
        lm.model.zero_grad(set_to_none=True)
        raise
    return loss


def split_query_and_scored(tokenizer, text: str, max_query_tokens: int = 1024) -> tuple[str, str]:
    """Leakage control of the paper's split run: the first min(1024, n/2) LM tokens are the retrieval query,
    only the rest is scored, so no scored text was used to find the neighbours. Both are cut from the text at a
    character boundary, so each is whole text and the scored part's bytes are exactly those its own tokens are
    scored on: where the cut token starts inside a character (a byte token of a multi-byte character), that
    whole character goes to the scored part and the query is a few bytes shorter."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    n_query = min(max_query_tokens, len(offsets) // 2)
    cut = offsets[n_query][0] if n_query else 0  # a token inside a character spans the whole character
    if cut == 0:
        raise ValueError("split_query needs a test document of at least 2 tokens whose first half holds a whole "
                         "character")
    return text[:cut], text[cut:]


def weights_file(lm: LanguageModel, config: StudyConfig) -> Path | None:
    """The file a `weights_snapshot='file'` run restores from (None: a copy in memory)."""
    if config.weights_snapshot == "memory":
        return None
    if lm.weights_file is None:
        raise ValueError(f"invalid weights_snapshot='file' for model {lm.name!r}: it was not loaded from a safetensors "
                         "file this study knows (packaged models are); use weights_snapshot='memory'")
    return lm.weights_file


def test_time_train(lm: LanguageModel, document: dict, neighbors: list[Neighbor], config: StudyConfig,
                    optimizer: torch.optim.Optimizer | None = None) -> ResultRow:
    """Run TTT-NN on one document and return its result row (`results.ResultRow`: log-likelihoods in nats, bytes
    as UTF-8); the model is unchanged afterwards, also when a step raises (the error propagates).

    `optimizer` may be shared by the documents of a run: with `reset_optimizer` (the default) its state is
    zeroed in place after each document, so every document starts as from a fresh optimizer; without, Adam's
    moments are carried to the next document (the official code's behaviour).
    """
    torch.manual_seed(config.seed)
    snapshot = loaded_weights(lm, config)
    optimizer = optimizer or make_optimizer(lm.model, config)
    ks = [k for k in config.ks if k <= len(neighbors)]
    evals, losses, seconds, steps = [], [], [], []

    def evaluate(k: int) -> None:
        score = score_text(lm, document["text"], config.eval_context, config.max_eval_tokens)
        evals.append({"k": k, "loglik": score["loglik"], "n_tokens": score["n_tokens"]})
        return score["n_bytes"]

    # However the document ends, its gradients go, the weights come back and the optimizer state is reset.
    with heap_allocation(), restored_after(lm, snapshot, optimizer, config.reset_optimizer):
        n_bytes = evaluate(0)
        saved, previous = [], None  # the last one-chunk gradient, for reuse_gradients
        for i, neighbor in enumerate(neighbors, start=1):
            start = time.perf_counter()
            if config.reuse_gradients and saved and neighbor.text == previous:
                loss, n_steps = reapply_gradient(lm, saved, optimizer, config), 1
            else:
                saved.clear()
                loss, n_steps = train_on_text(lm, neighbor.text, optimizer, config,
                                              saved if config.reuse_gradients else None)
            previous = neighbor.text
            losses.append(loss)
            steps.append(n_steps)
            seconds.append(time.perf_counter() - start)
            if i in ks:
                evaluate(i)
    return ResultRow(doc_id=document["id"], domain=document["domain"], pile_set_name=document["pile_set_name"],
                     group=document.get("group", document["id"]), source_id=document.get("source_id", document["id"]),
                     n_bytes=n_bytes, evals=evals, train_loss=losses, train_steps=steps, train_seconds=seconds,
                     distances=[n.distance for n in neighbors], neighbors=[n.doc_id for n in neighbors])
