# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Methods: configuration, deviations from the paper, provenance
#
# This page is generated from the same parameters as the results chapters. It lists the configuration that
# produced every number in this book, each departure from Hardt & Sun's setup as a named parameter with the
# paper's value, and where each model and text comes from, with the sha256 of what was assembled.

# %% tags=["parameters", "remove-cell"]
# This chapter's own parameters. The shared ones (k, model, corpus, ...: ttt_core.config.StudyConfig, listed on
# the book's Parameters page) are passed the same way: papermill -p k 5
provenance_models = "all"  # packaged models listed below: "all", or a comma-separated list of names
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "00_methods")

import pandas as pd
from IPython.display import display

from ttt_core.metrics import PILE_WEIGHTS, bits_per_byte, pile_weights, relative_change, score_text
from ttt_core.models import PACKAGED, assemble_packaged, scoring_prefix_token
from ttt_core.report import reproduce, show_configuration, show_table
from ttt_core.study import prepare

study = prepare(config)  # cached: loads the corpus and index the results chapters use

# %% [markdown]
# ## Configuration

# %% tags=["hide-input"]
show_configuration(config)

# %% [markdown]
# ## Deviations from the paper
# Each row is a parameter of `StudyConfig`; setting it to the paper's value restores the paper's choice
# (where the machine allows: the paper's GPT-2, RoBERTa index and Pile need the Hugging Face Hub).
# Fixed procedure details that follow the paper exactly: AdamW (eps 1e-8, weight decay 0.01), gradient
# clipping 1.0, batch 1, fp32, full fine-tuning, neighbours nearest first, one step per `max_length` chunk
# (every default neighbour is one chunk: at most 1,000 bytes, and every result row records its steps),
# weights restored after every document, lm-eval rolling bits per byte over the whole document.

# %% tags=["hide-input"]
with pd.option_context("display.max_colwidth", None):
    show_table(pd.DataFrame(config.deviations()).set_index("parameter"))

# %% [markdown]
# ## The retriever and index the chapters use, and why
# Every chapter retrieves from the whole large mini-Pile (121,645 train chunks before decontamination) with
# `minilm-static`, a static embedder distilled from the packaged MiniLM (`embedder` above), in an exact flat
# index: the paper's kind of retriever (a dense embedding index), at 38 times the size of the mini-Pile the book
# used before. Exact MiniLM embeds about 9 chunks per second on this 2-core CPU, so within the time budget it indexes
# about 3 % of this corpus; the static embedder indexes all of it in about two minutes. The
# {doc}`index-size chapter <04_index_size>` measures the choice, on the same test documents:
#
# - the default (static, whole index) against exact MiniLM over the 3 % it can afford:
#   {glue:text}`04_index_size.ipynb::default_choice:s`
#   ({glue:text}`04_index_size.ipynb::default_choice_verdict:s`);
# - exact MiniLM against static neighbours over the same 3 %:
#   {glue:text}`04_index_size.ipynb::index_quality:s`;
# - the whole index against 1 % of it, both static: {glue:text}`04_index_size.ipynb::index_size:s`.
#
# Recall of exact MiniLM's ten nearest over those 3 %, per retriever (`rerank`: BM25 and static candidates
# re-ranked by MiniLM): {glue:text}`04_index_size.ipynb::retriever_recall:s`; over the whole index, with exact
# MiniLM computed on a GPU (`benchmarks/full_recall.py`; the chapter shows every size):
# {glue:text}`04_index_size.ipynb::full_recall:s`. Re-ranking embeds up to 200 candidates per query with
# MiniLM, some 20 s per test document here, for every chapter and control; it stays a named option (`retriever`, in the deviations table), as BM25 and exact MiniLM (`embedder='minilm'`) do.

# %% [markdown]
# ## How the aggregates are formed
# *Per-document change* (every chapter's headline): each test document's relative change of bits per byte,
# averaged over documents; its 95 % interval (the verdict's; the paper's 10-90 % beside it) resamples sources
# (content groups: one file, or one message block or handbook page in every language), then chunks within each
# drawn source, because chunks of one source are not independent. A verdict needs a minimum of documents that
# differ and of sources, and a p-value that survives Bonferroni's correction for the landing page's claims (the
# landing page states the rule). *Pile-weighted*: each domain's bits per byte (summed log-likelihood over summed bytes) weighted by
# the Pile weight of the task it stands in for (the paper's `pile_all`), a task's weight split equally among the
# domains standing in for it, then **renormalised over the tasks present**: the mini-Pile covers only some of the
# Pile's 22 tasks, so each present task's weight is divided by their sum, and the tasks with the largest Pile
# weights (Pile-CC, arXiv, GitHub) dominate. *Plain mean*: every domain weighs the same. The table gives each
# domain's share of the Pile-weighted figure in this configuration.

# %% tags=["hide-input"]
weights = pile_weights(study.corpus.domains, study.pile_set_names)
weight_table = pd.DataFrame({"Pile task": [study.pile_set_names.get(d, "") for d in weights.index],
                             "Pile weight %": [PILE_WEIGHTS.get(study.pile_set_names.get(d, d), 0.0) for d in weights.index],
                             "share of Pile-weighted %": 100 * weights, "share of plain mean %": 100 / len(weights)},
                            index=weights.index).sort_values("share of Pile-weighted %", ascending=False)
show_table(weight_table, 2)
present = sorted(set(weight_table["Pile task"]))
print(f"{len(present)} of the Pile's 22 tasks are present; their Pile weights sum to "
      f"{sum(PILE_WEIGHTS.get(t, 0) for t in present):.2f} %, renormalised to 100 %")

# %% [markdown]
# The first scoring window's prefix (`score_prefix`), measured: the same model and test document scored with
# lm-evaluation-harness 0.4's rule (BOS, else EOS; the default) and with the vocabulary's `<|endoftext|>`
# (this study's first rule). The tests check the default against lm-eval's own `loglikelihood_rolling`.

# %% tags=["hide-input"]
lm = study.language_model()
probe = max(study.corpus.test_documents(1, config.seed), key=lambda d: len(d["text"]))
prefix_rows = []
for rule in ("lm-eval", "endoftext"):
    lm.prefix_token_id = scoring_prefix_token(lm.tokenizer, rule)
    score = score_text(lm, probe["text"], config.eval_context, config.max_eval_tokens)
    prefix_rows.append({"score_prefix": rule, "prefix token": lm.tokenizer.convert_ids_to_tokens(lm.prefix_token_id),
                        "bits per byte": bits_per_byte(score["loglik"], score["n_bytes"]),
                        "tokens": score["n_tokens"], "bytes": score["n_bytes"]})
lm.prefix_token_id = scoring_prefix_token(lm.tokenizer, config.score_prefix)
prefix_rows = pd.DataFrame(prefix_rows).set_index("score_prefix")
prefix_rows["change % vs lm-eval"] = relative_change(prefix_rows["bits per byte"].iloc[0], prefix_rows["bits per byte"])
show_table(prefix_rows, 6)
print(f"{config.model} on test document {probe['id']} ({probe['domain']}); the default language model is "
      f"{PACKAGED[config.model].training if config.model in PACKAGED else 'not packaged'} "
      f"(the paper's GPT-2 is a pretrained base model)")

# %% [markdown]
# ## Provenance of the models
# Every packaged model the chapters can use, assembled from its PyPI packages with its sha256 verified before
# use (the same check runs whenever a chapter loads it). "packages" gives the installed versions.

# %% tags=["hide-input"]
records = []
listed = set(PACKAGED) if provenance_models == "all" else {m for m in provenance_models.split(",") if m}
for name in sorted(listed | {config.model, config.embedder}):
    if name not in PACKAGED:
        records.append({"name": name, "what it is": "not a packaged model (Hub id, local folder or tiny test model)"})
        continue
    try:
        _, record = assemble_packaged(name, config.work_path / "models")
    except ModuleNotFoundError as missing:  # the larger models come with `make models-all`
        record = {"name": name, "kind": PACKAGED[name].kind, "packages": PACKAGED[name].versions(),
                  "what it is": PACKAGED[name].what_it_is, "sha256": f"not assembled: {missing}"}
    records.append({**record, "packages": ", ".join(f"{p}=={v}" for p, v in record["packages"].items())})
with pd.option_context("display.max_colwidth", None):
    show_table(pd.DataFrame(records).set_index("name"))

# %% [markdown]
# ## Provenance of the texts
# One row per mini-Pile domain: the package it comes from, its version, the sha256 of the text assembled
# from it, its license, and what the text really is.

# %% tags=["hide-input"]
sources = pd.DataFrame(study.corpus.manifest["sources"])
if sources.empty:
    sources = pd.DataFrame({"corpus": [config.corpus], "what it is": ["Pile-format documents read as given"]})
with pd.option_context("display.max_colwidth", None):
    show_table(sources.set_index(sources.columns[0]))

# %% [markdown]
# ## Corpus and index

# %% tags=["hide-input"]
counts = pd.DataFrame(study.corpus.manifest["documents per domain"]).T
counts["Pile task"] = [study.pile_set_names.get(d, "") for d in counts.index]
show_table(counts)
print(f"{len(study.corpus)} documents (at most {config.chunk_bytes} UTF-8 bytes per chunk); index: {len(study.index)} "
      f"train vectors, {study.index.meta['dim']}-d, metric {study.index.metric}, "
      f"embedded in {study.index.meta['embed_seconds']} s")

# %% [markdown]
# ## Reproduce this page
# {download}`Download the executed notebook <00_methods.ipynb>` (every output of this page, with its code).

# %% tags=["remove-input"]
display(reproduce("00_methods", params_file, {"TTT-NN": study.run_key}, config.work_dir))
