"""What every benchmark section shares: the machine's description, the study's configuration from a params file,
a device sync for timing, one training step's best wall time, the documents the sections run TTT-NN on, and the
child processes that some sections measure in (each prints one `RESULT {json}` line)."""
from __future__ import annotations

import json
import os
import platform
import signal
import time
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUN = HERE / "run.py"  # the one command; the sections that measure in child processes run it again


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch threads": torch.get_num_threads(), "memory GiB": round(memory, 1),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}


def study_config(params_file: Path, **overrides):
    from ttt_core.__main__ import study_parameters
    from ttt_core.config import StudyConfig

    params = yaml.safe_load(params_file.read_text()) or {}
    return StudyConfig.from_params(**{**study_parameters(params), **overrides})


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_training_step(lm, tokens: int, repeats: int) -> float:
    """Best wall time of one TTT-NN step (forward, backward, clipping, fused AdamW) after a warm-up."""
    from ttt_core.config import StudyConfig
    from ttt_core.ttt import heap_allocation, make_optimizer, reset_weights, snapshot_weights, training_step

    snapshot = snapshot_weights(lm.model)
    config = StudyConfig()
    optimizer = make_optimizer(lm.model, config)
    ids = torch.randint(0, lm.model.config.vocab_size, (1, tokens), device=lm.device)
    lm.model.train()
    best = float("inf")
    with heap_allocation():  # as test_time_train runs its steps
        for i in range(repeats + 1):
            start = time.perf_counter()
            training_step(lm.model, ids, optimizer, config.grad_clip)
            sync(lm.device)
            if i:
                best = min(best, time.perf_counter() - start)
    reset_weights(lm.model, snapshot)
    return best


def typical_neighbor_tokens(study, samples: int = 64) -> int:
    """Median token count of the study's train chunks under the model's tokenizer."""
    rows = study.corpus.rows("train")[:samples]
    texts = study.corpus.dataset.select(rows.tolist())["text"]
    return int(np.median([len(study.language_model().tokenizer(t, add_special_tokens=False)["input_ids"])
                          for t in texts]))


def protocol_documents(study, n_docs: int, long_bytes: int = 0) -> list[dict]:
    """The first test document of each domain in the sampled order, `n_docs` of them. With `long_bytes`, each
    is instead its whole source (its test chunks joined, up to that many bytes): the paper scores whole Pile
    documents, often many context windows long, which is where re-scoring after every neighbour costs most."""
    docs = study.corpus.test_documents(1, study.config.seed)[:n_docs]
    if not long_bytes:
        return docs
    test = study.corpus.dataset.select(study.corpus.rows("test").tolist())
    longer = []
    for doc in docs:
        parts = [t for t, s in zip(test["text"], test["source_id"]) if s == doc["source_id"]]
        text = "".join(parts).encode()[:long_bytes].decode(errors="ignore")
        longer.append(dict(doc, id=doc["id"] + "#whole-source", text=text))
    return longer


def failure_reason(text: str, limit: int = 200) -> str:
    """The line of a child's output that names its error (the last one mentioning an Error), else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or "Killed" in line or "killed" in line]
    return (named or lines or [""])[-1][:limit]


def run_child(command: list[str]) -> dict:
    """Run one measurement in a fresh process and return the JSON of its `RESULT ` line; a failure (out of memory
    or another) is recorded with the end of its stderr, not hidden."""
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True)
    return child_result(done.stdout, done.stderr, done.returncode)


def child_result(stdout: str, stderr: str, returncode: int) -> dict:
    """The JSON of a finished child's `RESULT ` line, or {"failed": why}."""
    line = next((l for l in stdout.splitlines() if l.startswith("RESULT ")), None)
    if line:
        return json.loads(line[len("RESULT "):])
    # A kill leaves no stderr: name the signal (SIGKILL, with no swap here, is the kernel's out-of-memory killer).
    status = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit status {returncode}"
    return {"failed": f"{status}: {failure_reason(stderr or '')}"}
