"""Seconds per TTT-NN training step and per scoring pass, and peak memory, for one model on this machine.

    .venv/bin/python benchmarks/ttt_step.py --model smollm2-135m --tokens 128 300 512 --repeats 3

Speed goals are measured here, never asserted in tests. Prints one line per token count (best of repeats
after one warm-up).
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from ttt_core.config import StudyConfig
from ttt_core.metrics import loglikelihood_rolling
from ttt_core.models import load_language_model
from ttt_core.ttt import make_optimizer, snapshot_weights, reset_weights


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 300, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-dir", default="artifacts")
    args = parser.parse_args()
    lm = load_language_model(args.model, args.work_dir, args.device)
    config = StudyConfig(max_length=max(args.tokens))
    optimizer = make_optimizer(lm.model, config)
    snapshot = snapshot_weights(lm.model)
    vocab = lm.model.config.vocab_size
    print(f"model={args.model} device={lm.device} threads={torch.get_num_threads()} params={lm.n_params / 1e6:.1f}M")
    for n in args.tokens:
        ids = torch.randint(0, vocab, (1, n), device=lm.device)
        steps, scores = [], []
        for _ in range(args.repeats + 1):
            lm.model.train()
            start = time.perf_counter()
            lm.model(input_ids=ids, labels=ids).loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps.append(time.perf_counter() - start)
            start = time.perf_counter()
            loglikelihood_rolling(lm.model, ids[0].tolist(), lm.prefix_token_id, lm.context_length)
            scores.append(time.perf_counter() - start)
        reset_weights(lm.model, snapshot)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"tokens={n:5d}  train step {min(steps[1:]):6.2f} s  score {min(scores[1:]):6.2f} s  "
              f"peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
