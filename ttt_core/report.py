"""The report around the numbers: a verdict in words for each claim, findings glued for the landing page
(myst-nb `glue`, so the book never types a number of ours), and the "reproduce this page" block."""
from __future__ import annotations

import shlex
from pathlib import Path

import nbformat
from IPython.display import Markdown

from .metrics import ALPHA, FAMILY_CLAIMS, MIN_DOCUMENTS, MIN_SOURCES, PairedChange, signed

REPRODUCED, NOT_REPRODUCED, NOT_RESOLVED = "reproduced", "not reproduced", "not resolved at this scale"
HOLDS, DOES_NOT_HOLD = "holds", "does not hold"
# One colour per verdict, in the landing page's figure and as a mark before the verdict in its table.
VERDICT_COLORS = {REPRODUCED: "#1a9850", HOLDS: "#4575b4", NOT_RESOLVED: "#969696", NOT_REPRODUCED: "#d73027",
                  DOES_NOT_HOLD: "#f46d43"}
VERDICT_MARKS = {REPRODUCED: "\u2705", HOLDS: "\U0001F535", NOT_RESOLVED: "\u26AA", NOT_REPRODUCED: "\u274C",
                 DOES_NOT_HOLD: "\U0001F7E0"}

# The landing page's claims, in its order: (chapter notebook, glue key, short label). FAMILY_CLAIMS counts them.
CLAIMS = (
    ("02_ttt", "ttt_change", "TTT-NN lowers bits per byte"),
    ("02_ttt", "ttt_more", "more neighbours help"),
    ("03_neighbors", "retrieval_vs_domain", "nearest beat random same-domain text"),
    ("04_index_size", "index_size", "a bigger index helps"),
    ("04_index_size", "index_quality", "a better embedder helps"),
    ("05_model_scaling", "scaling_reach", "small model after reaches larger before"),
    ("05_model_scaling", "scaling_base", "TTT-NN helps a pretrained base model"),
    ("06_leakage_control", "split_change", "gain survives the split protocol"),
    ("06_leakage_control", "leak_effect", "a leaky index inflates the gain"),
    ("07_baselines", "incontext_vs_ttt", "TTT-NN beats the neighbours in context"),
    ("07_baselines", "interpolation_vs_ttt", "TTT-NN beats unigram interpolation"),
    ("07_baselines", "dynamic_vs_ttt", "TTT-NN beats dynamic evaluation"),
    ("07_baselines", "sift_vs_nearest", "SIFT beats nearest neighbours"),
    ("07_baselines", "hullft_vs_nearest", "HullFT beats nearest neighbours"),
)


def verdict(change: PairedChange, lower_is_claimed: bool = True, paper_claim: bool = True) -> str:
    """The paper's claim (B lower than A when `lower_is_claimed`) against our paired change: reproduced when the
    change is resolved (`PairedChange.resolved`: at least MIN_DOCUMENTS documents that differ from MIN_SOURCES
    sources, the 95 % interval excluding zero, the bootstrap p-value below ALPHA after Bonferroni over the
    landing page's FAMILY_CLAIMS claims) on the claimed side, not reproduced when resolved on the other side, not
    resolved otherwise. A claim the paper did not test (a control of ours) holds or does not. The same property
    gives every chapter's sentence its verdict (`PairedChange.describe`), so they cannot disagree."""
    if not change.resolved:
        return NOT_RESOLVED
    claimed = (change.percent < 0) == lower_is_claimed
    if paper_claim:
        return REPRODUCED if claimed else NOT_REPRODUCED
    return HOLDS if claimed else DOES_NOT_HOLD


VERDICT_RULE = (f"at least {MIN_DOCUMENTS} documents that differ, from at least {MIN_SOURCES} sources, a 95 % "
                f"interval that excludes zero and a bootstrap p-value below {ALPHA} after Bonferroni's correction "
                f"for the landing page's {FAMILY_CLAIMS} claims")


def interval_text(change: PairedChange) -> str:
    """'-3.7 % (95 % interval -4.6 to -2.9 %, 10-90 % -4.3 to -3.1 %), 26 of 26 documents differ, from 13
    sources': the mean per-document change with both intervals, or why there is no interval."""
    # Below the verdict's minimum the count follows, so the bracket names the rule rather than repeating it.
    bracket = (f"no interval: a verdict needs {MIN_DOCUMENTS} documents that differ, from {MIN_SOURCES} sources"
               if change.shortfall else change.interval_text())
    return (f"{signed(change.percent)} % ({bracket}), {change.n_differ} of {change.n_documents} documents differ, "
            f"from {change.n_sources_differ} sources")


def show_table(frame, digits: int = 3) -> None:
    """Display `frame` as every chapter shows its tables: floats with `digits` decimals, integers with thousands
    separators, missing values (NaN, None, <NA>) as '–', booleans as yes/no; long headers wrap rather than the
    table scrolling sideways (book/_static/report.css)."""
    import numpy as np
    import pandas as pd
    from IPython.display import display

    def cell(value):
        if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and value != value):
            return "–"
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if isinstance(value, (int, np.integer)):
            return f"{value:,}"
        if isinstance(value, (float, np.floating)):
            return f"{value:,.{digits}f}"
        return str(value)

    frame = frame.to_frame() if isinstance(frame, pd.Series) else frame
    display(frame.map(cell))


def show_configuration(config) -> None:
    """Display every field of a StudyConfig as one table ("The configuration that produced these numbers"): lists
    and tuples as text, None as '–', as `show_table` shows any value."""
    import pandas as pd

    values = {name: value if isinstance(value, (bool, int, float, str, type(None))) else str(value)
              for name, value in config.as_dict().items()}
    show_table(pd.DataFrame({"value": pd.Series(values, dtype=object)}))


def glue_text(key: str, text: str) -> None:
    """Store `text` in the executed notebook under `key` for `{glue:text}` on another page (nothing displayed)."""
    from myst_nb import glue  # imported here: only the notebooks need it

    glue(key, str(text), display=False)


FINDING = "finding"
# The chapter's title cell pastes this key, so the finding stands directly under the title on the rendered page,
# above the folded code that computed it (myst-nb resolves a glue key from any cell of the same notebook).
FINDING_DIRECTIVE = "```{glue:md} finding\n:format: myst\n```"


# The landing-page claims this kernel has glued, in order (`glue_finding`): the chapter's headline reads them.
_GLUED: dict[str, dict] = {}


def short_text(data: dict) -> str:
    """A claim's mean change with its 95 % interval, short: '-5.4 % (95 % -7.4 to -3.6)' (`data` as `key_data`)."""
    if data.get("percent") is None:
        return "no result"
    if data.get("low") is None:
        return f"{signed(data['percent'])} % (no interval)"
    return f"{signed(data['percent'])} % (95 % {signed(data['low'])} to {signed(data['high'])})"


def headline(key: str, data: dict) -> str:
    """One line for a landing-page claim: 'TTT-NN lowers bits per byte: -5.4 % (95 % -7.4 to -3.6); the paper's
    GPT-2 117M, k = 10: -12.5 %. ✅ reproduced'."""
    label = {k: text for _, k, text in CLAIMS}[key]
    ours = short_text(data)
    paper = (f"; the paper's {data['paper_note']}: {signed(data['paper_percent'])} %"
             if data.get("paper_percent") is not None else "")
    return f"**{label[0].upper() + label[1:]}**: {ours}{paper}. {VERDICT_MARKS[data['verdict']]} {data['verdict']}"


def show_finding(*paragraphs: str) -> None:
    """Display the chapter's finding (in Jupyter) and glue it as `finding` for the title cell (in the book, where
    the cell itself is removed). A chapter that glued landing-page claims (`glue_finding`) opens with one headline
    per claim (ours with its interval, the paper's where it has one, the verdict) and folds the full text below."""
    from myst_nb import glue

    lines = [headline(key, data) for key, data in _GLUED.items()]
    text = "\n\n".join(paragraphs)
    if lines:
        # <details> passes through MyST as raw HTML and renders in Jupyter too; the Markdown between stays Markdown.
        text = ("\n\n".join(lines) + "\n\n<details><summary>The finding in full</summary>\n\n" + text
                + "\n\n</details>")
    glue(FINDING, Markdown(text), display=True)


def glue_finding(key: str, change: PairedChange, lower_is_claimed: bool = True, paper_claim: bool = True,
                 note: str = "", paper_percent: float | None = None, paper_note: str = "") -> None:
    """Glue `key` (the interval text, with `note` after it), `key_verdict` (the verdict after its colour mark),
    `key_short` (mean and 95 % interval, then `note`: the landing page's abstract) and `key_data` (the numbers, for
    the landing page's figure: `claims_frame`). `paper_percent`: the
    paper's own relative change for the same comparison (`paper.relative_change`), where it reports one, with
    `paper_note` saying at which setting (its k, its model)."""
    said = verdict(change, lower_is_claimed, paper_claim)
    glue_text(key, interval_text(change) + (f", {note}" if note else ""))
    data = _glue_verdict(key, said, change, note, paper_percent, paper_note)
    glue_text(f"{key}_short", short_text(data) + (f", {note}" if note else ""))


def glue_not_resolved(key: str, text: str, change: PairedChange | None = None, paper_percent: float | None = None,
                      paper_note: str = "") -> None:
    """Glue a claim this run cannot test (`text` says why) as not resolved, with `change` in the figure if any."""
    glue_text(key, text)
    _glue_verdict(key, NOT_RESOLVED, change, text, paper_percent, paper_note)


def _glue_verdict(key, said, change, note, paper_percent, paper_note) -> dict:
    from myst_nb import glue

    glue_text(f"{key}_verdict", f"{VERDICT_MARKS[said]} {said}")
    number = lambda x: None if x is None or x != x else float(x)  # NaN (no interval) as JSON null
    ours = {} if change is None else {"percent": number(change.percent), "low": number(change.percent_low),
                                      "high": number(change.percent_high)}
    # A dict's repr (text/plain, read back with ast.literal_eval): a hidden glue's JSON mime type would not be
    # valid nbformat (myst-nb prefixes it).
    data = {"percent": None, "low": None, "high": None, **ours, "verdict": said, "note": note,
            "paper_percent": number(paper_percent), "paper_note": paper_note}
    glue(f"{key}_data", data, display=False)
    if key in {k for _, k, _ in CLAIMS}:
        _GLUED[key] = data
    return data


def glued_outputs(notebook: str | Path) -> dict[str, dict]:
    """Every myst-nb glue output of an executed notebook: glue name -> its mime bundle (a hidden glue's types carry
    myst-nb's prefix)."""
    found = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                found[name] = output.get("data", {})
    return found


def claims_frame(executed: str | Path) -> "pd.DataFrame":
    """One row per landing-page claim (CLAIMS order): label, ours (percent, low, high: the 95 % interval), verdict,
    the paper's percent where it has one; read from the `<key>_data` glued by the executed chapters in `executed`.
    A chapter that has not run, or glued no data for a claim, gives a row of NaN and verdict 'not run'."""
    import ast

    import pandas as pd

    glued = {}
    for notebook in sorted({name for name, _, _ in CLAIMS}):
        path = Path(executed) / f"{notebook}.ipynb"
        if not path.exists():
            continue
        for name, data in glued_outputs(path).items():
            plain = [v for m, v in data.items() if m.endswith("text/plain")]
            if name.endswith("_data") and plain:
                glued[(notebook, name[:-5])] = ast.literal_eval("".join(plain[0]))
    rows = []
    for notebook, key, label in CLAIMS:
        empty = {"percent": None, "low": None, "high": None, "verdict": "not run", "note": "", "paper_percent": None,
                 "paper_note": ""}
        rows.append({"claim": label, "key": key, "chapter": notebook, **empty, **glued.get((notebook, key), {})})
    return pd.DataFrame(rows)


def results_figure(claims: "pd.DataFrame"):
    """The landing page's figure: one row per claim, our mean per-document change of bits per byte with its 95 %
    interval coloured by verdict, the paper's change (a diamond) where it reports one; the tally in the title."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10, 0.42 * len(claims) + 1.6))
    y = list(range(len(claims)))[::-1]
    for row, yy in zip(claims.itertuples(), y):
        color = VERDICT_COLORS.get(row.verdict, "#000000")
        if row.percent == row.percent and row.percent is not None:
            if row.low == row.low and row.low is not None:
                ax.plot([row.low, row.high], [yy, yy], color=color, lw=2.5, solid_capstyle="butt")
            ax.plot(row.percent, yy, "o", color=color, ms=7)
        paper = getattr(row, "paper_percent", None)
        if paper is not None and paper == paper:
            ax.plot(paper, yy, "D", mfc="white", mec="black", ms=6)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{claim} (ch. {chapter[:2]})" for claim, chapter in zip(claims["claim"], claims["chapter"])])
    ax.set_xlabel("change of bits per byte, % (mean per document, the two sides each claim compares)")
    counts = claims["verdict"].value_counts()
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICT_COLORS if v in counts)
    ax.set_title(f"{len(claims)} claims: {tally}", fontsize=10)
    handles = [Line2D([], [], color=c, marker="o", lw=2.5, label=v) for v, c in VERDICT_COLORS.items()]
    handles.append(Line2D([], [], color="black", marker="D", mfc="white", lw=0, label="the paper's change"))
    height = fig.get_size_inches()[1]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1))  # room for the legend's two rows below the axis
    return fig


def write_results_figure(executed: str | Path, output: str | Path | None = None) -> Path:
    """Draw `results_figure` from the chapters executed in `executed` into `output` (default `executed`/results.png,
    which the landing page shows); returns the path. FileNotFoundError when `executed` holds no executed chapter."""
    import matplotlib

    matplotlib.use("Agg")
    if not any(Path(executed).glob("0*.ipynb")):
        raise FileNotFoundError(f"no executed chapters (0*.ipynb) in {executed}: run `make` or `python -m ttt_core "
                                f"run` first")
    path = Path(output) if output else Path(executed) / "results.png"
    fig = results_figure(claims_frame(executed))
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def reproduce(notebook: str, params_file: str, run_keys: dict[str, str], work_dir: str) -> Markdown:
    """The commands that re-create a chapter, its run keys and where their result rows live."""
    out = f"book/executed/{notebook}.ipynb"
    params = f"-f {shlex.quote(params_file)}" if params_file else "-f <your parameter file>"
    keys = "\n".join(f"| {label} | `{key}` | `{Path(work_dir) / 'results' / (key + '.jsonl')}` |"
                     for label, key in run_keys.items())
    return Markdown(
        f"Re-run this chapter (finished documents are read back from the results files, so a rerun with the same "
        f"configuration only re-renders):\n\n"
        f"```bash\npapermill notebooks/{notebook}.ipynb {out} {params}"
        + (f" -p params_file {shlex.quote(params_file)}" if params_file else "")
        + f" --cwd .\npython -m ttt_core mark-for-book {out}\njupyter-book build book/ -W --keep-going\n```\n\n"
        f"or `make` for every chapter. The run key names every input of a result (`Study.run_key`: the "
        f"configuration, what the index holds, the weights, the library versions, the code version):\n\n"
        f"| run | key | result rows |\n|---|---|---|\n{keys}\n")


def mark_for_book(path: str | Path) -> None:
    """Hide what papermill injected from the rendered page: its parameter cell becomes `remove-cell` (the
    configuration table at the end of each chapter shows the values)."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(notebook, path)
