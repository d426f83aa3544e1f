"""Seconds per TTT-NN training step and per scoring pass, and peak memory, for one model on this machine.

    .venv/bin/python benchmarks/ttt_step.py --model smollm2-135m --tokens 128 300 512 --repeats 3
    python benchmarks/ttt_step.py --random-init path/to/config-folder --device cuda   # shapes only, no weights
    .venv/bin/python benchmarks/ttt_step.py --model qwen2.5-coder-0.5b --tokens 218 --profile   # where a step goes

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
from ttt_core.ttt import make_optimizer, reset_weights, snapshot_weights, training_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 300, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-dir", default="artifacts")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, print torch.profiler's top operators of one more step per token count")
    parser.add_argument("--random-init", metavar="FOLDER",
                        help="time a randomly initialised model of this config.json instead (same shapes, same cost)")
    args = parser.parse_args()
    if args.random_init:
        from transformers import AutoConfig, AutoModelForCausalLM

        from ttt_core.models import LanguageModel, resolve_device

        device = resolve_device(args.device)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.random_init), dtype=torch.float32)
        cfg = model.config
        lm = LanguageModel(model.to(device), None, args.random_init, device, cfg.max_position_embeddings, 0, {})
        args.model = args.random_init
    else:
        lm = load_language_model(args.model, args.work_dir, args.device)
    config = StudyConfig(max_length=max(args.tokens))
    optimizer = make_optimizer(lm.model, config)
    snapshot = snapshot_weights(lm.model)
    vocab = lm.model.config.vocab_size
    print(f"model={args.model} device={lm.device} threads={torch.get_num_threads()} params={lm.n_params / 1e6:.1f}M")

    def sync():
        if lm.device.type == "cuda":
            torch.cuda.synchronize()

    for n in args.tokens:
        ids = torch.randint(0, vocab, (1, n), device=lm.device)
        steps, scores = [], []
        for _ in range(args.repeats + 1):
            lm.model.train()
            start = time.perf_counter()
            training_step(lm.model, ids, optimizer, config.grad_clip)
            sync()  # CUDA runs asynchronously: wait for the step before reading the clock
            steps.append(time.perf_counter() - start)
            start = time.perf_counter()
            loglikelihood_rolling(lm.model, ids[0].tolist(), lm.prefix_token_id, lm.context_length)
            scores.append(time.perf_counter() - start)
        if args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                lm.model.train()
                with torch.profiler.record_function("forward+backward"):
                    lm.model(input_ids=ids, labels=ids).loss.backward()
                with torch.profiler.record_function("clip_grad_norm_"):
                    torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
                with torch.profiler.record_function("optimizer.step"):
                    optimizer.step()
                with torch.profiler.record_function("zero_grad"):
                    optimizer.zero_grad(set_to_none=True)
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
        reset_weights(lm.model, snapshot)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"tokens={n:5d}  train step {min(steps[1:]):7.4f} s  score {min(scores[1:]):7.4f} s  "
              f"peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
