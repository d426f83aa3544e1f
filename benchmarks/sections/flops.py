"""The flops section: how near one TTT-NN training step comes to the machine's practical peak.

For each model (`--models`), at its typical neighbour length and at 512 tokens: the best wall time of one training
step (s), its FLOPs (GFLOP), the achieved rate (GFLOP/s) as a ratio to a large fp32 matrix product's in the same
process (goal >= 0.6), and the roofline: the step's FLOPs at that product's rate plus its per-weight passes at a large
copy's bandwidth (GB/s), in seconds and as a ratio to the step's time."""
from __future__ import annotations

import time

import torch

from common import study_config, sync, time_training_step, typical_neighbor_tokens


def matmul_flops(device, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large fp32 matrix product in this process: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def copy_bandwidth(device, gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy in this process (read + write): the machine's practical memory bandwidth."""
    a = torch.ones(int(gib * 2**30 / 4), device=device)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        b.copy_(a)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * 4 / best


# Bytes moved per parameter by the parts of a step that touch every weight once, whatever the token count:
# fused AdamW reads weight, gradient and two moments and writes weight and moments (7 x 4 B), gradient clipping
# reads the gradient for its norm and scales it in place (3 x 4 B), the backward pass writes it (4 B).
PARAMETER_PASS_BYTES = 44


def step_flops(model: torch.nn.Module, tokens: int) -> float:
    """FLOPs of one training step (forward and backward) on `tokens` tokens: 6 per matrix-multiply parameter
    per token, counting the output projection over the vocabulary even where it is tied to the embedding (the
    lookup is free, the projection is not), plus attention's two T x T products per layer (x3 for backward)."""
    cfg = model.config
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding  # listed once in parameters(), used twice
    matmul_params = sum(p.numel() for p in model.parameters()) - embedding.numel() + (embedding.numel() if tied else 0)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * tokens * tokens * cfg.num_attention_heads * head_dim
    return 6 * tokens * matmul_params + attention


def run(args) -> dict:
    from ttt_core.models import load_language_model
    from ttt_core.study import prepare

    config = study_config(args.params, device=args.device)
    study = prepare(config, progress=False)
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    # The machine's rate drifts between minutes on this VM (its matrix product measured 141 to 172 GFLOP/s on
    # one day): it is measured before and after every model and the highest of all is the reference, so each
    # ratio is against the best this process saw, never flattered by a slow moment.
    peaks, bandwidths, measured = [matmul_flops(device)], [copy_bandwidth(device)], []
    for name in args.models:
        lm = load_language_model(name, config.work_path, config.device)
        study.lm = lm
        typical = typical_neighbor_tokens(study)
        for tokens in sorted({typical, 512}):
            measured.append((name, tokens, tokens == typical, time_training_step(lm, tokens, args.repeats),
                             step_flops(lm.model, tokens), lm.n_params))
            print(measured[-1], flush=True)
        del lm
        study.lm = None
        peaks.append(matmul_flops(device))
        bandwidths.append(copy_bandwidth(device))
    peak, bandwidth = max(peaks), max(bandwidths)
    rows = []
    for name, tokens, typical, seconds, flops, n_params in measured:
        # The roofline: the step's FLOPs at the matrix product's rate plus its per-weight passes at the copy's.
        floor = flops / peak + PARAMETER_PASS_BYTES * n_params / bandwidth
        rows.append({"model": name, "tokens": tokens, "typical": typical, "step s": seconds,
                     "step GFLOP": flops / 1e9, "achieved GFLOP/s": flops / seconds / 1e9,
                     "matmul GFLOP/s": peak / 1e9, "ratio": flops / seconds / peak,
                     "copy GB/s": bandwidth / 1e9, "roofline s": floor, "roofline / step": floor / seconds})
    return {"matmul GFLOP/s measured": [round(p / 1e9, 1) for p in peaks],
            "rows": rows, "goal": "ratio >= 0.6 for every model (roofline: the step's FLOPs at the matrix "
                                  f"product's rate plus {PARAMETER_PASS_BYTES} bytes per weight at the copy's)"}
