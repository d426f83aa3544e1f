"""params/paper-*.yml: the paper's setup (ttt_core.paper.PAPER_SETUP), transcribed from the official code of
Hardt & Sun, ICLR 2024 (arXiv 2305.18466): github.com/socialfoundations/tttlm at commit 99d4e0a.

Two tests read that code itself and the authors' committed aggregates where a checkout is given:
    git clone https://github.com/socialfoundations/tttlm && git -C tttlm checkout 99d4e0a
    TTTLM_OFFICIAL=$PWD/tttlm pytest tests/test_paper_params.py
"""
import inspect
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from ttt_core import paper
from ttt_core.params import study_parameters
from ttt_core.config import StudyConfig
from ttt_core.paper import (BASELINES_GPT2_LARGE, GPT2_TASKS_K50, KS, PAPER_MODELS, PAPER_SCALE, PAPER_SETUP,
                            PILE_ALL_BY_K)

OFFICIAL_COMMIT = "99d4e0a"
OFFICIAL = Path(os.environ["TTTLM_OFFICIAL"]) if os.environ.get("TTTLM_OFFICIAL") else None
needs_official = pytest.mark.skipif(OFFICIAL is None, reason="TTTLM_OFFICIAL (a checkout of socialfoundations/"
                                    f"tttlm at {OFFICIAL_COMMIT}) is not set")
# The official results folder of each curve of ttt_core.paper.PILE_ALL_BY_K.
AGGREGATES = {"GPT-2 117M": "eval-gpt2-pile_all-1upn-lr2e-5-50n",
              "GPT-2 117M split (leakage control)": "eval-gpt2-pile_all-1upn-lr2e-5-50n-split",
              "GPT-2 Large 774M": "eval-gpt2-large-pile_all-1upn-lr2e-5-50n",
              "GPT-Neo 1.3B": "eval-gptneo1.3B-pile_all-1upn-lr5e-6-50n"}
PRIVATE_NOTES = re.compile(r"\b(PAPER|ASSETS)\.md\b|shared[/\\]reference")  # notes kept outside the repository


def short(rate: float) -> str:
    """2e-05 -> '2e-5', as the official code and the parameter files' comments write a learning rate."""
    return f"{rate:.0e}".replace("e-0", "e-")


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_each_paper_parameter_set_is_the_papers_setup(name):
    params = yaml.safe_load((ROOT / "params" / f"{name}.yml").read_text())
    config = StudyConfig.from_params(**study_parameters(params)).validate()
    model, learning_rate, max_length = PAPER_MODELS[name]
    assert (config.model, config.learning_rate, config.max_length) == (model, learning_rate, max_length)
    for field, value in PAPER_SETUP.items():
        assert getattr(config, field) == value, f"{name}: {field}={getattr(config, field)!r}, paper {value!r}"
    assert config.reset_optimizer  # the documented departure (its comment says how to restore the carry)
    assert "reset_optimizer" in (ROOT / "params" / f"{name}.yml").read_text().split("\nmodel:")[0]


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_each_paper_parameter_set_cites_its_public_source(name):
    """The header names the paper and the official code's commit, and the values it cites are the file's own."""
    head = (ROOT / "params" / f"{name}.yml").read_text().split("\nmodel:")[0]
    assert "arXiv 2305.18466" in head and f"socialfoundations/tttlm @ {OFFICIAL_COMMIT}" in head
    assert "code/eval_tttlm.py" in head and not PRIVATE_NOTES.search(head)
    _, learning_rate, max_length = PAPER_MODELS[name]
    assert f"learning_rate {short(learning_rate)}" in head and f"stride {max_length}" in head


def test_the_papers_numbers_cite_public_sources():
    """ttt_core.paper names the paper, the commit and each results file its numbers come from."""
    text = inspect.getsource(paper)
    assert "arXiv 2305.18466" in text and f"socialfoundations/tttlm at commit {OFFICIAL_COMMIT}" in text
    assert all(run in text for run in AGGREGATES.values()) and set(AGGREGATES) == set(PILE_ALL_BY_K)
    for cited in ("results/baseline_context/baseline_gpt2_large.txt", "code/utils.py", "code/eval_tttlm.py",
                  "results/baseline_interpolation/baseline_gpt2_large.txt", "arXiv 2511.16691"):
        assert cited in text, cited
    assert not PRIVATE_NOTES.search(text)


def test_no_tracked_file_cites_notes_outside_the_repository():
    """A reader of this repository cannot follow a citation of notes that live outside it. (README.md is left to
    its own rewrite.)"""
    try:
        files = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    cited = [f"{name}:{n}" for name in files if name != "README.md" and (ROOT / name).is_file()
             for n, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
             if PRIVATE_NOTES.search(line)]
    assert not cited


@needs_official
def test_paper_setup_is_the_official_codes():
    """A second reading of the setup, from the official code itself."""
    import torch

    if (OFFICIAL / ".git").exists():
        head = subprocess.run(["git", "-C", str(OFFICIAL), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert head.stdout.startswith(OFFICIAL_COMMIT), head.stdout
    code = (OFFICIAL / "code" / "eval_tttlm.py").read_text()

    def default(flag):
        return re.search(rf"'--{flag}', type=\w+, ?default=([^)]+)\)", code).group(1).strip("'")

    assert int(default("num_neighbors")) == PAPER_SETUP["k"]
    assert float(default("val_portion")) == PAPER_SETUP["test_portion"]
    assert float(default("adam_epsilon")) == PAPER_SETUP["adam_epsilon"]
    assert f"rnd.seed({PAPER_SETUP['split_seed']})" in code
    assert f"clip_grad_norm_(self.model.parameters(), {PAPER_SETUP['grad_clip']})" in code
    adamw = code.split("torch.optim.AdamW(")[1].split("self.task")[0]
    assert "eps = config.adam_epsilon" in adamw and "weight_decay" not in adamw  # torch's default applies:
    assert inspect.signature(torch.optim.AdamW).parameters["weight_decay"].default == PAPER_SETUP["weight_decay"]
    neo, neo_rate, neo_length = PAPER_MODELS["paper-gptneo"]  # the argparse defaults are GPT-Neo's
    assert (default("model"), float(default("learning_rate"))) == (neo, neo_rate)
    assert int(default("max_length")) == int(default("stride")) == neo_length
    readme = (OFFICIAL / "README.md").read_text()
    assert f"huggingface.co/{PAPER_SETUP['embedder']}" in readme
    gpt2_command = readme.split("To evaluate on GPT2:")[1].split("```")[1]
    for name in ("paper-gpt2", "paper-gpt2-large"):
        _, rate, length = PAPER_MODELS[name]
        assert f"--max_length {length}" in gpt2_command and f"--stride {length}" in gpt2_command
        assert f"--learning_rate {short(rate)}" in gpt2_command
    condor = (OFFICIAL / "condor" / "eval_pile_all.sub").read_text()
    assert f"{short(neo_rate)} - GPTNeo" in condor and f"{short(PAPER_MODELS['paper-gpt2'][1])} - GPT2" in condor
    embedding = (OFFICIAL / "code" / "text_embedding.py").read_text()
    # truncation at the tokenizer's own maximum, 512 for roberta-base (514 positions, 2 taken by the offset)
    assert f"RobertaTokenizer.from_pretrained('{PAPER_SETUP['embedder_tokenizer']}')" in embedding
    assert "truncation=True" in embedding and PAPER_SETUP["embed_max_tokens"] == 512
    assert "faiss.IndexFlatL2(" in (OFFICIAL / "code" / "build_database.py").read_text()
    assert PAPER_SETUP["index_type"] == "flat" and PAPER_SETUP["chunk_bytes"] is None  # one whole document a row


@needs_official
def test_paper_numbers_are_the_official_aggregates():
    """ttt_core.paper's numbers, recomputed from the authors' committed aggregates and baseline results."""
    import torch

    weights = {t: float(w) for t, w in re.findall(r'"(pile_[\w-]+)": ([\d.]+)',
                                                  (OFFICIAL / "code" / "utils.py").read_text())}
    assert len(weights) == 22 and round(sum(weights.values()), 6) == 100

    def load(run):
        return torch.load(OFFICIAL / "results" / run / "aggregate_stats.pth", weights_only=False)

    def pile_all(values):  # task -> bits per byte, weighted as code/process_results.py's compute_pile_all
        return sum(weights[t] * values[t] for t in weights) / 100

    for model, run in AGGREGATES.items():
        agg = load(run)
        curve = [round(pile_all({t: agg[t][k]["bits_per_byte"] for t in weights}), 4) for k in KS]
        assert tuple(curve) == PILE_ALL_BY_K[model], model
    gpt2 = load(AGGREGATES["GPT-2 117M"])
    for task, pair in GPT2_TASKS_K50.items():
        assert tuple(round(gpt2[f"pile_{task}"][k]["bits_per_byte"], 4) for k in (0, 50)) == pair, task
    gains = {t[5:]: gpt2[t][50]["bits_per_byte"] / gpt2[t][0]["bits_per_byte"] for t in weights}
    best = min(gains, key=gains.get)
    assert PAPER_SCALE["largest gain"] == (best, *GPT2_TASKS_K50[best])
    cost = pile_all({t: sum(gpt2[t][k]["training_cost"] for k in range(1, 51)) / 50 for t in weights})
    assert round(cost, 1) == PAPER_SCALE["seconds per neighbour (GPT-2, A100)"]

    def results(path):
        return {t: float(v) for t, v in (line.split() for line in (OFFICIAL / "results" / path).read_text()
                                          .splitlines() if line.strip())}

    large = PILE_ALL_BY_K["GPT-2 Large 774M"]
    context = round(pile_all(results("baseline_context/baseline_gpt2_large.txt")), 4)
    assert BASELINES_GPT2_LARGE == {"base": large[0], "in-context (20 neighbours, 1,024 tokens)": context,
                                    "interpolation (test-tuned alpha)":
                                        results("baseline_interpolation/baseline_gpt2_large.txt")["pile_all"],
                                    "TTT-NN k = 20": large[KS.index(20)]}
