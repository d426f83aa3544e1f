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
# # In-context against TTT-NN: where the context's gain comes from
#
# ```{glue:md} finding
# :format: myst
# ```

# %% tags=["parameters", "remove-cell"]
# This chapter's own parameters. The shared ones (k, model, corpus, ...: ttt_core.config.StudyConfig, listed on
# the book's Parameters page) are passed the same way: papermill -p k 5
context_k = 5  # neighbours put in the context and trained on (the in-context comparison's k)
context_docs_per_domain = 1
first_tokens = 32  # the "first tokens" of a document: its cold start from the scoring prefix
cold_starts = "0,32,64"  # both methods scored on the tokens after the first N
position_edges = "0,8,16,32,64,128,256,512,1024,2048,8192"  # bins of token positions for the figure
longer_bytes = 4000  # longer test documents: each chunk grown to this many UTF-8 bytes from its source's test chunks
longer_context = 1024  # the paper's context (GPT-2's), beside the model's own, for the longer documents
# Of ttt_core.context.CONTEXTS, 'nearest' needed. The book leaves out random-domain (the baselines chapter has it)
contexts = "nearest,after,random-any,preceding,filler"
second_model = "gemma3-270m"  # a pretrained base model for the decisive comparisons ("" skips)
second_model_contexts = "nearest,random-any,preceding"  # the book's subset (params/full.yml: all six)
second_model_longer_context = False  # also its longer documents in longer_context tokens (params/full.yml: true)
params_file = ""  # the parameter file this run was given (shown in "Reproduce this page")

# %% tags=["hide-input", "remove-output"]
# Before the cell binds any other name: a parameter this notebook does not declare is a typo, not a no-op.
from ttt_core.params import notebook_config

config = notebook_config(globals(), "08_in_context")

import dataclasses

import pandas as pd
import seaborn as sns
from IPython.display import display

from ttt_core.context import (CONTEXTS, change_difference, context_key, head_share, position_frame, rows_at,
                              run_contexts, span_change)
from ttt_core.metrics import signed
from ttt_core.models import check_model_name
from ttt_core.plots import use_report_style
from ttt_core.report import (glue_finding, glue_text, interval_text, reproduce, show_configuration, show_finding,
                             show_table)
from ttt_core.study import prepare, vary

def integers(name, value) -> list[int]:
    try:
        return sorted({int(x) for x in str(value).split(",")})
    except ValueError:
        raise ValueError(f"invalid {name}={value!r}: expected comma-separated integers, e.g. '0,32,64'") from None


def count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


cuts, edges = integers("cold_starts", cold_starts), integers("position_edges", position_edges)
kinds = {name: tuple(x.strip() for x in str(value).split(",") if x.strip())
         for name, value in (("contexts", contexts), ("second_model_contexts", second_model_contexts))}
for name, chosen in kinds.items():
    if "nearest" not in chosen or not set(chosen) <= set(CONTEXTS):
        raise ValueError(f"invalid {name}={globals()[name]!r}: expected 'nearest' and any of {list(CONTEXTS)}, "
                         "comma-separated")
for name, value, ok, valid in (
        ("context_k", context_k, count(context_k) and context_k >= 1, "an integer >= 1"),
        ("context_docs_per_domain", context_docs_per_domain, count(context_docs_per_domain)
         and context_docs_per_domain >= 1, "an integer >= 1"),
        ("first_tokens", first_tokens, count(first_tokens) and first_tokens >= 1, "an integer >= 1"),
        ("cold_starts", cold_starts, cuts[0] >= 0, "comma-separated integers >= 0"),
        ("position_edges", position_edges, len(edges) >= 2 and edges[0] == 0, "at least two integers from 0"),
        ("longer_bytes", longer_bytes, count(longer_bytes) and longer_bytes > config.chunk_bytes,
         f"an integer above chunk_bytes={config.chunk_bytes}"),
        ("longer_context", longer_context, count(longer_context) and longer_context >= 2, "an integer >= 2"),
        ("second_model_longer_context", second_model_longer_context, isinstance(second_model_longer_context, bool),
         "true or false"),
        # The chapter scores whole documents in the model's context after TTT-NN on the nearest neighbours, one
        # step each with a fresh optimizer: a run that changes any of that would compare something else.
        ("eval_context", config.eval_context, config.eval_context is None, "None (the model's context)"),
        ("max_eval_tokens", config.max_eval_tokens, config.max_eval_tokens is None, "None (every token)"),
        ("neighbors", config.neighbors, config.neighbors == "nearest", "'nearest'"),
        ("selection", config.selection, config.selection == "nearest", "'nearest'"),
        ("split_query", config.split_query, not config.split_query, "False"),
        ("reuse_gradients", config.reuse_gradients, not config.reuse_gradients, "False"),
        ("reset_optimizer", config.reset_optimizer, config.reset_optimizer, "True")):
    if not ok:
        raise ValueError(f"invalid {name}={value!r} for the in-context chapter: expected {valid}")
if second_model:
    try:
        check_model_name(second_model, "lm")
    except (ValueError, ModuleNotFoundError) as error:
        raise type(error)(f"invalid second_model={second_model!r}: {error}") from None

use_report_style()
config = dataclasses.replace(config, k=context_k, docs_per_domain=context_docs_per_domain)
study = prepare(config)
documents = study.test_documents()
names = study.pile_set_names
models = [config.model] + ([second_model] if second_model and second_model != config.model else [])
# One row per document and model: every context on the test chunk, and the chunk grown to `longer_bytes` (its
# source's adjacent test chunks) with the same neighbours in the model's context and in `longer_context` tokens;
# TTT-NN trained once on the chunk's neighbours and scored on both.
runs, run_keys, short, long_rows = {}, {}, {}, {}
for model_name in models:
    main_model = model_name == config.model
    windows = (None, longer_context) if main_model or second_model_longer_context else (None,)
    options = dict(contexts=kinds["contexts" if main_model else "second_model_contexts"], windows=(None,), ttt=True,
                   longer_bytes=longer_bytes, longer_contexts=("nearest",), longer_windows=windows)
    runs[model_name] = study if main_model else vary(study, model=model_name)
    rows = run_contexts(runs[model_name], documents, **options)
    short[model_name] = rows_at(rows)
    for context in windows:
        long_rows[(model_name, context)] = rows_at(rows, context, "longer")
    run_keys[f"{model_name}: contexts and TTT-NN, {config.chunk_bytes}- and {longer_bytes}-byte documents"] = context_key(
        runs[model_name], **options)


def change(rows, a, b, start=0, stop=None):
    return span_change(rows, a, b, names, start, stop, config.bootstrap_samples, config.seed)


# Every context and TTT-NN against no context; then TTT-NN against in-context on the tokens after the first N.
controls, splits, cold, longer = [], [], [], []
for model_name, rows in short.items():
    for method in [*(c for c in CONTEXTS if c in rows[0]["logprobs"]), "ttt"]:
        controls.append({"model": model_name, "method": method, "change": change(rows, "none", method)})
    for method in [m for m in ("nearest", "random-any", "ttt") if m in rows[0]["logprobs"]]:
        for span, (start, stop) in {f"first {first_tokens} tokens": (0, first_tokens),
                                    f"after the first {first_tokens}": (first_tokens, None)}.items():
            splits.append({"model": model_name, "method": method, "tokens": span, "change": change(rows, "none", method,
                                                                                              start, stop)})
    for cut in cuts:
        cold.append({"model": model_name, "scored": f"tokens after the first {cut}" if cut else "every token",
                     "change": change(rows, "nearest", "ttt", cut)})
for (model_name, context), rows in long_rows.items():
    window = context or runs[model_name].language_model().context_length
    for a, b in (("none", "nearest"), ("none", "ttt"), ("nearest", "ttt")):
        longer.append({"model": model_name, "context tokens": window, "documents grown": sum(
            len(r["chunks"]) > 1 for r in rows), "document tokens": round(
            sum(len(r["token_bytes"]) for r in rows) / len(rows)), "documents with neighbours placed": sum(
            r["context_tokens"]["nearest"] > 0 for r in rows), "neighbour tokens placed": round(
            sum(r["context_tokens"]["nearest"] for r in rows) / len(rows)), "comparison": f"{b} vs {a}",
                       "change": change(rows, a, b)})
checked = [r for rows in short.values() for r in rows if r["logprobs"].get("after") is not None]
after_drift = max((abs(x - y) for r in checked for x, y in zip(r["logprobs"]["after"], r["logprobs"]["none"])),
                  default=float("nan"))
if after_drift > 1e-3:  # a causal model cannot see what follows: anything more is a bug in the scoring
    raise RuntimeError(f"the neighbours placed after the document changed a token's log-probability by "
                       f"{after_drift:.2e} nats: the scoring sees text it should not")
positions = pd.concat([position_frame(rows, edges).assign(model=model_name) for model_name, rows in short.items()])


def table(entries: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**{k: v for k, v in e.items() if k != "change"}, **e["change"].as_row()} for e in entries])


def pick(entries, **where):
    return next((e["change"] for e in entries if all(e[k] == v for k, v in where.items())), None)


def entry(entries, **where):
    return next(e for e in entries if all(e[k] == v for k, v in where.items()))


def difference(rows_a, rows_b, start_a=0, start_b=0):
    return change_difference(rows_a, rows_b, "nearest", "ttt", start_a, start_b, config.bootstrap_samples, config.seed)


main, last = config.model, cuts[-1]
model_context = runs[main].language_model().context_length
paper_window = min(longer_context, model_context)
gap = pick(cold, model=main, scored="every token")
gap_late = pick(cold, model=main, scored=f"tokens after the first {last}")
long_gap = pick(longer, model=main, **{"context tokens": model_context, "comparison": "ttt vs nearest"})
paper_gap = pick(longer, model=main, **{"context tokens": paper_window, "comparison": "ttt vs nearest"})
# Does in-context's lead shrink? Per document, TTT-NN against in-context on every token minus the same after the
# first N tokens (the cold start), and on the chunk minus on its longer version (short documents): percentage
# points, paired, with intervals. And is the neighbours' text worth more than any text: nearest and TTT-NN against
# a random context of any domain.
shrinks = {"cold": difference(short[main], short[main], 0, last),
           "short": difference(short[main], long_rows[(main, None)])}
beyond = {m: span_change(short[main], "random-any", m, names, 0, None, config.bootstrap_samples, config.seed)
          for m in ("nearest", "ttt") if "random-any" in short[main][0]["logprobs"]}
glue_finding("incontext_gap", gap, lower_is_claimed=True,
             note=f"TTT-NN against in-context, k = {context_k}, {main}, {config.chunk_bytes}-byte documents")
glue_finding("incontext_gap_late", gap_late, lower_is_claimed=True,
             note=f"the same, scored on the tokens after the first {last}")
glue_finding("incontext_gap_long", long_gap, lower_is_claimed=True,
             note=f"the same at {longer_bytes}-byte documents in the model's {model_context} tokens")
glue_finding("incontext_gap_paper", paper_gap, lower_is_claimed=True,
             note=f"the same at {longer_bytes}-byte documents in {paper_window} tokens (the paper's condition)")


def leads(change) -> bool:
    """In-context ahead of TTT-NN: TTT-NN's bits per byte higher than in-context's, resolved."""
    return change is not None and change.resolved and change.percent > 0


def shrunk(change) -> bool:
    """In-context's lead resolved smaller in the second condition (the difference resolved and positive)."""
    return change.resolved and change.percent > 0


explained = []
if shrunk(shrinks["cold"]):
    explained.append(f"the cold start: without the first {last} tokens the lead is {interval_text(gap_late)}, "
                     f"smaller by {signed(shrinks['cold'].percent)} points ({interval_text(shrinks['cold'])})")
if "nearest" in beyond and not beyond["nearest"].resolved:
    explained.append(f"a generic warm start: the nearest neighbours in the context do no better than random chunks "
                     f"of any domain ({interval_text(beyond['nearest'])})")
if shrunk(shrinks["short"]):
    explained.append(f"short documents: grown to {longer_bytes} bytes, same neighbours, the lead is "
                     f"{interval_text(long_gap)}, smaller by {signed(shrinks['short'].percent)} points "
                     f"({interval_text(shrinks['short'])})")
if not leads(gap):
    conclusion = f"In-context does not lead TTT-NN here ({interval_text(gap)}), so there is no lead to explain."
elif explained:
    conclusion = "What explains part or all of in-context's lead here: " + "; ".join(explained) + "."
else:
    conclusion = ("None of the tested explanations (the first tokens' cold start, a generic warm start, short "
                  "documents) accounts for in-context's lead: it does not shrink without the first tokens or at "
                  f"longer documents ({interval_text(gap_late)}; {interval_text(long_gap)}), and the nearest "
                  "neighbours beat random text in the context.")
placed_docs = entry(longer, model=main, **{"context tokens": paper_window, "comparison": "ttt vs nearest"})
paper_condition = (f"In the paper's condition ({longer_bytes}-byte documents in {paper_window} tokens: neighbours "
                   f"placed before {placed_docs['documents with neighbours placed']} of {len(long_rows[(main, None)])} "
                   f"documents, the others scored alone) TTT-NN against in-context is {interval_text(paper_gap)}.")
glue_text("incontext_conclusion", conclusion + " " + paper_condition)
glue_text("incontext_conditions", f"{config.chunk_bytes}-byte documents, model's context: {interval_text(gap)}; "
          f"after the first {last} tokens: {interval_text(gap_late)}; {longer_bytes}-byte documents in the model's "
          f"context: {interval_text(long_gap)}; in {paper_window} tokens: {interval_text(paper_gap)}")

# %% tags=["remove-cell"]
def gains(model):
    """Each context's change against no context, as a phrase (each on the documents that have it)."""
    named = {"nearest": "nearest neighbours", "random-any": "random chunks of any domain",
             "random-domain": "random chunks of its domain", "preceding": "its own preceding text",
             "filler": "newlines"}
    parts = [f"{text} {c.percent:+.1f} %" + (f" ({c.n_documents} documents)" if kind == "preceding" else "")
             for kind, text in named.items() if (c := pick(controls, model=model, method=kind)) is not None]
    return f"{model}: " + ", ".join(parts)


def share(rows, method):
    value = head_share(rows, method, first_tokens)
    return "none (no gain)" if value != value else f"{value:.0%}"


paragraphs = [
    conclusion + " " + paper_condition,
    f"With {context_k} neighbours and {len(documents)} documents of {config.chunk_bytes} bytes (about "
    f"{round(sum(len(r['token_bytes']) for r in short[main]) / len(short[main]))} tokens), TTT-NN against the "
    f"same neighbours in the context ({main}): **{gap.describe()}**; on the tokens after the first {last}: "
    f"{gap_late.describe()}. The same documents grown toward {longer_bytes} bytes "
    f"({entry(longer, model=main, **{'context tokens': model_context, 'comparison': 'ttt vs nearest'})['documents grown']}"
    f" of {len(documents)} could be), neighbours and training unchanged, in the model's context: "
    f"{long_gap.describe()}.",
    "Where the context's gain comes from, against no context: " + "; ".join(gains(model) for model in models) + "."
    + (f" Against random chunks of any domain in the same tokens, the nearest neighbours in the context: "
       f"{interval_text(beyond['nearest'])}; TTT-NN: {interval_text(beyond['ttt'])}." if beyond else "")
    + (f" The neighbours placed after the document change no token by more than {after_drift:.1e} nats (a check "
       "of the code: the document cannot see them)." if checked else ""),
    f"The first {first_tokens} tokens carry " + "; ".join(
        f"{share(rows, 'nearest')} of in-context's gain and {share(rows, 'ttt')} of TTT-NN's ({model}, "
        "log-likelihood summed over documents; descriptive, no interval)" for model, rows in short.items()) + ".",
]
show_finding(*paragraphs)

# %% tags=["hide-input"]
order = ["none", "nearest", "random-any", "preceding", "filler", "ttt"]
shown = positions[positions["method"].isin(order)]
grid = sns.relplot(data=shown, x="start", y="loss", hue="method", hue_order=order, col="model", kind="line",
                   marker="o", errorbar=None, height=4, aspect=1.2, facet_kws={"sharey": False})
grid.set(xlabel="token position (bin start; linear to 8, log above)", ylabel="mean loss (nats per token)")
for ax in grid.axes.flat:
    ax.set_xscale("symlog", linthresh=8)
    ax.set_xlim(left=0)
grid.figure.suptitle(f"Where the gain is: loss by position, {len(documents)} documents of {config.chunk_bytes} bytes, "
                     f"k = {context_k}", y=1.03)

# %% [markdown]
# ## How this was run
# The baselines chapter found the reverse of the paper: the k nearest neighbours read in the context lower bits
# per byte far more than training on them. Our test documents are short (`chunk_bytes`-byte chunks; the finding
# above gives their mean length in tokens) and are scored from a cold start (the scoring prefix alone), where the
# paper scored whole Pile documents in GPT-2's 1,024 tokens, which a long document fills, leaving no room for
# neighbours (the official code then scored it without them). So every scored token's log-probability is kept
# (`ttt_core.context`) under no context, under contexts that differ only in what their tokens say, and after TTT-NN
# on the same neighbours, on the same documents:
#
# - **nearest**: the k nearest neighbours, each ending with EOS, before the document (the in-context baseline);
# - **after**: the same neighbours after the document, which a causal model cannot see (a check of the code);
# - **random-any** and **random-domain**: random chunks of the whole index, or of the document's domain;
# - **preceding**: the document's own preceding text in its source, at most as long as the nearest neighbours'
#   (shorter where the source has less; none for a source's first chunk, so on fewer documents);
# - **filler**: newlines, the same length and no text (no repeated token is neutral to a language model: the table
#   shows what this one does).
#
# From these: the loss by token position (the figure), the first `first_tokens` tokens against the rest, and
# TTT-NN against in-context scored only on the tokens after the first N (`cold_starts`). Last, each test chunk
# grown into a longer document (`longer_bytes`: its source's adjacent test chunks, the whole source where it is
# shorter), with the same neighbours and the same training, in the model's context and in `longer_context` tokens,
# where the document leaves less room for neighbours, as the paper's whole Pile documents left in GPT-2's.

# %% [markdown]
# ## The context's controls
# Each context against no context on the same documents and tokens (negative: the context lowers bits per byte),
# every context cut to at most the tokens the nearest neighbours take (the random ones fill them; the preceding
# text may be shorter). 'after' is a check of the code, not a control: the
# document cannot see what follows it.

# %% tags=["hide-input"]
show_table(table(controls), 3)

# %% [markdown]
# ## The first tokens against the rest

# %% tags=["hide-input"]
show_table(table(splits), 3)

# %% [markdown]
# ## The cold start: TTT-NN against in-context after the first N tokens
# Negative: TTT-NN lower than in-context.

# %% tags=["hide-input"]
show_table(table(cold), 3)

# %% [markdown]
# ## Longer documents
# Each test chunk grown into a longer document (`longer_bytes`, its source's adjacent test chunks), with the
# chunk's neighbours and training; the
# document fills more of the context, as the paper's whole Pile documents filled GPT-2's.

# %% tags=["hide-input"]
show_table(table(longer), 3)

# %% [markdown]
# ## Reproduce this page

# %% tags=["remove-input"]
display(reproduce("08_in_context", params_file, run_keys, config.work_dir))

# %% [markdown]
# ## The configuration that produced these numbers
# The shared configuration; each arm replaces some of it (its own `context_k`, `eval_context`, `selection`), and its
# run key above names every value it ran with.

# %% tags=["hide-input"]
show_configuration(config)
