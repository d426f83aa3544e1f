"""The paper's published numbers, for side-by-side display only (other models, other corpus).

Source: Hardt & Sun, "Test-Time Training on Nearest Neighbors for Large Language Models", ICLR 2024
(arXiv 2305.18466), through the authors' committed aggregates in the official repository
github.com/socialfoundations/tttlm at commit 99d4e0a: `results/<run>/aggregate_stats.pth`, one per run
(eval-gpt2-pile_all-1upn-lr2e-5-50n, eval-gpt2-pile_all-1upn-lr2e-5-50n-split,
eval-gpt2-large-pile_all-1upn-lr2e-5-50n, eval-gptneo1.3B-pile_all-1upn-lr5e-6-50n), each a dict
task -> [stats at k = 0..50] with 'bits_per_byte' and 'training_cost'. Pile-weighted ("pile_all") = sum over
tasks of weight * bits per byte / 100, with the weights of `code/utils.py` (PILE_WEIGHTS), as `compute_pile_all`
in `code/process_results.py` sums them. Nothing here is computed by this repository.
"""
import pandas as pd

KS = (0, 1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 50)
PILE_ALL_BY_K = {  # Pile-weighted bits per byte after training on k neighbours
    "GPT-2 117M": (1.2079, 1.1487, 1.1260, 1.1079, 1.0872, 1.0573, 1.0376, 1.0249, 1.0158, 1.0094, 0.9993, 0.9922),
    "GPT-2 117M split (leakage control)": (1.2402, 1.1724, 1.1486, 1.1309, 1.1107, 1.0828, 1.0644, 1.0529,
                                           1.0451, 1.0398, 1.0305, 1.0242),
    "GPT-2 Large 774M": (1.0724, 0.9843, 0.9591, 0.9387, 0.9171, 0.8914, 0.8733, 0.8669, 0.8629, 0.8611, 0.8566,
                         0.8537),
    "GPT-Neo 1.3B": (0.7385, 0.7351, 0.7323, 0.7292, 0.7248, 0.7181, 0.7138, 0.7117, 0.7108, 0.7109, 0.7107, 0.7103),
}
# GPT-2 117M, bits per byte before -> after 50 neighbours, for the Pile tasks our mini-Pile stands in for.
GPT2_TASKS_K50 = {
    "arxiv": (1.3169, 1.1132), "dm-mathematics": (1.5466, 1.0763), "europarl": (2.3502, 1.3805),
    "freelaw": (1.0400, 0.8606), "github": (1.9184, 0.6907), "gutenberg": (1.4045, 1.2681),
    "hackernews": (1.4262, 1.2329), "pile-cc": (1.0831, 1.0218), "stackexchange": (1.2994, 1.0413),
    "uspto": (0.8647, 0.7372), "wikipedia": (1.1266, 0.9563),
}


def relative_change(model: str, k: int, k0: int = 0) -> float | None:
    """The paper's relative change (%) of Pile-weighted bits per byte from k0 to k neighbours for `model` (a key of
    PILE_ALL_BY_K); None where the paper reports no such k."""
    if k not in KS or k0 not in KS:
        return None
    before, after = PILE_ALL_BY_K[model][KS.index(k0)], PILE_ALL_BY_K[model][KS.index(k)]
    return 100 * (after - before) / before


def pile_all_frame() -> pd.DataFrame:
    """Long frame (model, k, bpb) of the paper's Pile-weighted curves."""
    return pd.DataFrame([{"model": m, "k": k, "bpb": v} for m, vals in PILE_ALL_BY_K.items()
                         for k, v in zip(KS, vals)])


def gpt2_tasks_frame() -> pd.DataFrame:
    """GPT-2 117M's bits per byte per Pile task before and after TTT-NN on 50 neighbours (`GPT2_TASKS_K50`, from the
    official repository's aggregates, see the module docstring) and the relative change in percent; one row per
    task our mini-Pile stands in for."""
    rows = [{"Pile task": t, "before": b, "after k=50": a, "change %": 100 * (a - b) / b}
            for t, (b, a) in GPT2_TASKS_K50.items()]
    return pd.DataFrame(rows).set_index("Pile task")


# The paper's baselines (socialfoundations/tttlm @ 99d4e0a: `code/baseline_context.py`,
# `code/baseline_interpolation.py`; per-task results in `results/baseline_context/baseline_gpt2_large.txt`, Pile-
# weighted here with `code/utils.py`'s weights, and `results/baseline_interpolation/baseline_gpt2_large.txt`,
# whose own pile_all line is 0.99), Pile-weighted bits per byte: GPT-2 Large 774M with 20 neighbours
# in its 1,024-token context (the official truncation kept the farthest neighbours' ends), and the unigram
# interpolation with alpha chosen on the test documents themselves. Dynamic evaluation's numbers are not
# published in the repository.
BASELINES_GPT2_LARGE = {"base": 1.0724, "in-context (20 neighbours, 1,024 tokens)": 1.0643,
                        "interpolation (test-tuned alpha)": 0.99, "TTT-NN k = 20": 0.8669}


def baseline_change(baseline: str) -> float:
    """The paper's relative change (%) of GPT-2 Large's Pile-weighted bits per byte from `baseline` (a key of
    BASELINES_GPT2_LARGE) to TTT-NN at k = 20."""
    before = BASELINES_GPT2_LARGE[baseline]
    return 100 * (BASELINES_GPT2_LARGE["TTT-NN k = 20"] - before) / before


# The paper's setup per model: the official code's defaults (socialfoundations/tttlm @ 99d4e0a: the argparse
# defaults of `code/eval_tttlm.py`, its split `rnd.seed(1216)` and AdamW without weight_decay, i.e. torch's 0.01;
# `code/text_embedding.py`; `code/build_database.py`'s IndexFlatL2), its README (embedding checkpoint, the GPT-2
# command) and `condor/eval_pile_all.sub` (learning rates), which
# params/paper-*.yml must match (tests/test_paper_params.py). Everything not listed is the same for all three.
PAPER_SETUP = {
    "k": 50, "eval_ks": KS, "embedder": "socialfoundations/roberta-large-pile-lr2e-5-bs16-8gpu-1700000",
    "embedder_tokenizer": "roberta-base", "embed_max_tokens": 512, "index_type": "flat", "chunk_bytes": None,
    "test_portion": 0.2, "split_seed": 1216, "adam_epsilon": 1e-8, "weight_decay": 0.01, "grad_clip": 1.0,
    "optimizer": "adamw", "eval_context": None, "max_eval_tokens": None, "score_prefix": "lm-eval",
    "decontam_threshold": None, "split_query": False,
}
PAPER_MODELS = {  # parameter file -> model, learning rate, max_length (= stride) of the training chunks
    "paper-gpt2": ("gpt2", 2e-5, 1024),
    "paper-gpt2-large": ("gpt2-large", 2e-5, 1024),
    "paper-gptneo": ("EleutherAI/gpt-neo-1.3B", 5e-6, 2048),
}


# The paper's scale and cost, for the paper-scale page beside ours: 42,916 test documents (20 % of the test set),
# 210M indexed train sequences (arXiv 2305.18466, its data description); 180 servers (the official README, 30
# shards x 6 replicas); 860 GB = 210M x 1024 float32 (the README: "approximately 800GB" to download); 128 GB of
# RAM per server (the reproducibility report arXiv 2511.16691: over 128 GB); 5.5 s per neighbour on one A100
# (the paper's Figure 9 plots this cost per task; here the Pile-weighted mean over k = 1..50 of 'training_cost' in
# the GPT-2 aggregates, 5.45 s, which times the step and the re-scoring after it, `code/eval_tttlm.py:295-301`);
# github's gain from the GPT-2 aggregates.
PAPER_SCALE = {"test documents": 42916, "test portion %": 20, "indexed documents (millions)": 210, "index GB": 860, "servers": 180,
               "RAM per server GB": 128, "seconds per neighbour (GPT-2, A100)": 5.5,
               "largest gain": ("github", 1.9184, 0.6907)}
