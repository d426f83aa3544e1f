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


def glue_text(key: str, text: str) -> None:
    """Store `text` in the executed notebook under `key` for `{glue:text}` on another page (nothing displayed)."""
    from myst_nb import glue  # imported here: only the notebooks need it

    glue(key, str(text), display=False)


FINDING = "finding"
# The chapter's title cell pastes this key, so the finding stands directly under the title on the rendered page,
# above the folded code that computed it (myst-nb resolves a glue key from any cell of the same notebook).
FINDING_DIRECTIVE = "```{glue:md} finding\n:format: myst\n```"


def show_finding(*paragraphs: str) -> None:
    """Display the chapter's finding (in Jupyter) and glue it as `finding` for the title cell (in the book, where
    the cell itself is removed)."""
    from myst_nb import glue

    glue(FINDING, Markdown("\n\n".join(paragraphs)), display=True)


def glue_finding(key: str, change: PairedChange, lower_is_claimed: bool = True, paper_claim: bool = True,
                 note: str = "") -> None:
    """Glue `key` (the interval text, with `note` after it) and `key_verdict`."""
    glue_text(key, interval_text(change) + (f", {note}" if note else ""))
    glue_text(f"{key}_verdict", verdict(change, lower_is_claimed, paper_claim))


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
