"""The threads section: training steps per second of the whole machine with one process on every core, against one
single-threaded process per core at once (each document is independent), each a fresh process (run.py again, with
--threads-child): seconds per step of each process, steps/s of the machine and their ratio."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import RUN, child_result, study_config, time_training_step, typical_neighbor_tokens


def child(args) -> None:
    """One process: the best training-step time of `--threads-model` at its typical neighbour length."""
    from ttt_core.study import prepare

    config = study_config(args.params, model=args.threads_model, device=args.device)
    study = prepare(config, progress=False)
    tokens = typical_neighbor_tokens(study)
    lm = study.language_model()
    if args.threads_barrier:  # start timing only when every process has loaded, so all of them run at once
        barrier = Path(args.threads_barrier)
        (barrier / str(os.getpid())).touch()
        while len(list(barrier.iterdir())) < args.threads_processes:
            time.sleep(0.05)
    print("RESULT " + json.dumps({"threads": torch.get_num_threads(), "tokens": tokens,
                                  "step s": time_training_step(lm, tokens, args.repeats)}),
          flush=True)


def run(args) -> dict:
    """Steps per second of the whole machine: one process with all cores, then one single-threaded process per
    core at once (the documents of a run are independent, so either could run them)."""
    import subprocess

    cores = os.cpu_count() or 1
    command = [sys.executable, str(RUN), "--threads-child", "--threads-model", args.threads_model,
               "--repeats", str(args.repeats), "--params", str(args.params), "--device", args.device]

    def run(threads: int, processes: int) -> list[dict]:
        import tempfile

        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with tempfile.TemporaryDirectory() as barrier:
            extra = ["--threads-barrier", barrier, "--threads-processes", str(processes)]
            children = [subprocess.Popen(command + extra, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True) for _ in range(processes)]
            results = [child_result(*child.communicate(), child.returncode) for child in children]
        failed = [r["failed"] for r in results if "failed" in r]
        if failed:
            raise RuntimeError(f"a threads child failed: {failed[0]}")
        return results

    rows = []
    for threads, processes in ((cores, 1), (1, cores)):
        results = run(threads, processes)
        rows.append({"model": args.threads_model, "processes": processes, "threads each": threads,
                     "tokens": results[0]["tokens"], "step s (each)": float(np.mean([r["step s"] for r in results])),
                     "steps/s of the machine": sum(1 / r["step s"] for r in results)})
        print(rows[-1], flush=True)
    for row in rows:
        row["throughput ratio"] = row["steps/s of the machine"] / rows[0]["steps/s of the machine"]
    return {"rows": rows, "goal": "the thread setting that gives the machine the most training steps per second"}
