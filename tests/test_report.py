"""The report: verdicts in words, the landing page's numbers glued from notebooks, papermill's cell hidden."""
import dataclasses
import re

import nbformat
import pytest

from conftest import ROOT
from ttt_core import paper
from ttt_core.config import StudyConfig
from ttt_core.metrics import (ALPHA, FAMILY_CLAIMS, MIN_DOCUMENTS, MIN_SOURCES, NO_INTERVAL, PairedChange,
                              domain_changes, signed)
from ttt_core.minipile import SOURCES
from ttt_core.report import (DOES_NOT_HOLD, FINDING_DIRECTIVE, HOLDS, NOT_REPRODUCED, NOT_RESOLVED, REPRODUCED,
                             interval_text, mark_for_book, reproduce, verdict)

LANDING = ROOT / "book" / "index.md"
GLUE = re.compile(r"\{glue:text\}`(?P<doc>[^`]+?)\.ipynb::(?P<key>\w+):s`")
# A number not inside a name (GPT-2, L6-v2, SmolLM2-135M, 2e-5: a letter or a dash after a letter before it),
# with its sign; what follows it does not matter ("3.7pp" is 3.7). Model sizes ("135M", "0.5B") are allowed below.
NUMBER = re.compile(r"(?<![\w.])(?<![A-Za-z]-)[−+-]?\d+(?:,\d{3})*(?:\.\d+)?")
DIRECTIVE_OPTIONS = re.compile(r"(```\{[^}]+\}[^\n]*\n)((?::[\w-]+:[^\n]*\n)+)")


def change(percent, low, high, n=10, p=None, sources=None):
    """A paired change of `n` documents that all differ, from `sources` (default n) sources; p from the interval
    unless given."""
    p = (0.002 if low > 0 or high < 0 else 0.5) if p is None else p
    return PairedChange(n_documents=n, n_domains=2, n_groups=sources or n, n_differ=n, n_sources_differ=sources or n,
                        percent=percent, percent_low=low, percent_high=high, percent_p10=low / 2, percent_p90=high / 2,
                        p_value=p, samples=1000, bpb=0, bpb_low=0, bpb_high=0, pile_before=1, pile_after=1, pile=0,
                        pile_low=0, pile_high=0, share_lower=0.5, plain_before=1, plain_after=1, plain=0,
                        plain_low=0, plain_high=0)


@pytest.mark.parametrize("low, high, lower_claimed, expected", [
    (-3, -1, True, REPRODUCED), (1, 3, True, NOT_REPRODUCED), (-1, 1, True, NOT_RESOLVED),
    (1, 3, False, REPRODUCED), (-3, -1, False, NOT_REPRODUCED)])
def test_verdict_follows_the_interval_and_the_claimed_side(low, high, lower_claimed, expected):
    assert verdict(change((low + high) / 2, low, high), lower_claimed) == expected


def test_a_control_holds_or_not_and_one_document_never_resolves():
    assert verdict(change(-2, -3, -1), paper_claim=False) == HOLDS
    assert verdict(change(2, 1, 3), paper_claim=False) == DOES_NOT_HOLD
    assert verdict(change(-2, -3, -1, n=1)) == NOT_RESOLVED  # one document: no interval, never a finding


def test_signed_keeps_the_sign_of_every_bound():
    assert signed(-0.003) == "-0.003" and signed(0.004) == "+0.004" and signed(-0.04) == "-0.04"
    assert signed(-1e-9).startswith("-") and signed(0.0) == "0.0" and signed(-3.74) == "-3.7"
    text = interval_text(change(0.15, -0.003, 0.3))
    assert "-0.003 to +0.3" in text and "0.0 to" not in text


@pytest.mark.parametrize("case", [
    dict(percent=-2, low=-3, high=-1), dict(percent=-2, low=-3, high=-1, p=0.01),  # Bonferroni: 0.14
    dict(percent=-2, low=-3, high=-1, n=MIN_DOCUMENTS - 1), dict(percent=-2, low=-3, high=-1, sources=1),
    dict(percent=1, low=-1, high=3), dict(percent=2, low=1, high=3)])
def test_every_sentence_uses_the_landing_pages_verdict(case):
    """A chapter's sentence and the landing page's verdict come from one property: "resolved" in the sentence
    exactly when the verdict is not "not resolved", and no interval is claimed below the minimum evidence."""
    c = change(**case)
    said = c.describe()
    assert (verdict(c) != NOT_RESOLVED) == said.split("; lower on")[0].endswith(("resolved, lower", "resolved, higher"))
    assert (verdict(c) == NOT_RESOLVED) == (": not resolved" in said)
    assert f"{c.n_differ} of {c.n_documents} documents differ" in said and "documents differ" in interval_text(c)
    if c.n_differ < MIN_DOCUMENTS or c.n_sources_differ < MIN_SOURCES:
        assert "excludes zero" not in said.replace("whether the change excludes zero", "")
        assert "no interval" in interval_text(c) and "95 % interval" not in interval_text(c)
    assert interval_text(c).count("documents differ") == 1 and said.count("documents differ") == 1  # said once


def test_the_verdict_corrects_for_the_family_of_claims():
    assert verdict(change(-2, -3, -1, p=ALPHA / FAMILY_CLAIMS / 2)) == REPRODUCED
    assert verdict(change(-2, -3, -1, p=ALPHA / FAMILY_CLAIMS * 2)) == NOT_RESOLVED  # 95 % alone would say reproduced


def test_the_landing_page_states_the_verdict_rule_and_grades_the_family_it_names():
    text = LANDING.read_text()
    table = text.split("```{list-table}", 1)[1].split("```", 1)[0]
    assert len(table.split("\n* - ")[1:]) - 1 == FAMILY_CLAIMS  # one row per claim of the family
    for phrase in ("95 %", "Bonferroni", f"{FAMILY_CLAIMS} claims", f"{MIN_SOURCES} sources",
                   f"{MIN_DOCUMENTS} documents", "10-90 %"):
        assert phrase in text, phrase


def test_one_document_domains_are_not_drawn_as_intervals():
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from ttt_core.plots import plot_change_by_domain
    frame = pd.DataFrame({"change %": [-1.0, -2.0], "low %": [-1.5, np.nan], "high %": [-0.5, np.nan],
                          "documents": [3, 1]}, index=pd.Index(["code", "books"], name="domain"))
    fig = plot_change_by_domain(frame, ("all documents", -1.5, -2.0, -1.0))
    ax = fig.axes[0]
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer" and c.has_xerr]
    assert len(bars) == 2  # the domain with an interval and the aggregate; the one-document domain is a point
    assert any("no interval" in t.get_text() for t in ax.get_yticklabels())
    plt.close(fig)


def _number(text: str) -> str:
    return text.replace("−", "-").replace(",", "").lstrip("+")


def allowed_numbers() -> set[str]:
    """What the landing page may type itself: the paper's numbers (its curves to 3 or 4 decimals, the relative
    change from k = 0 or k = 1 to k = 10 or k = 50 of one curve; a k is named "k = N"), the default configuration's values, the count of
    mini-Pile domains, and citation and scale facts of the paper (year, arXiv id, 210 million documents, an
    800 GB index on 180 machines)."""
    allowed = {"2024", "2305.18466", "210", "800", "180", "0.4", "10", "90", "80"}  # lm-eval 0.4; 10-90 % = 80 %
    # the verdict rule's constants (metrics), which the page states
    allowed |= {"95", f"{ALPHA:g}", str(FAMILY_CLAIMS), str(MIN_DOCUMENTS), str(MIN_SOURCES)}
    # model sizes in names: the paper's models and the packaged ladder (135M, 270M, 0.5B, 1.5B)
    allowed |= {m for name in paper.PILE_ALL_BY_K for m in re.findall(r"(\d+(?:\.\d+)?)[MB]\b", name)}
    allowed |= {"135", "270", "0.5", "1.5"}
    for curve in paper.PILE_ALL_BY_K.values():
        allowed |= {f"{a:.3f}" for a in curve} | {f"{a:.4f}" for a in curve}
        at = dict(zip(paper.KS, curve))
        allowed |= {f"{100 * (at[b] - at[a]) / at[a]:.1f}" for a in (0, 1) for b in (10, 50)}
    base = paper.BASELINES_GPT2_LARGE["base"]  # the baselines row: values, their change from base, 20 neighbours
    allowed |= {f"{v:g}" for v in paper.BASELINES_GPT2_LARGE.values()} | {"20", "2025", "2026"}
    allowed |= {f"{100 * (v - base) / base:.1f}" for v in paper.BASELINES_GPT2_LARGE.values()}
    for before, after in paper.GPT2_TASKS_K50.values():
        allowed |= {f"{before:.4f}", f"{after:.4f}", f"{100 * (after - before) / before:.1f}"}
    # the default configuration's values that the method section quotes, by name
    config = StudyConfig()
    quoted = (paper.PAPER_SETUP["embed_max_tokens"], config.chunk_bytes, config.decontam_ngram, config.grad_clip, config.k)
    allowed |= {f"{v:g}" for v in quoted} | {str(v) for v in quoted}
    allowed |= {f"{100 * config.decontam_threshold:g}"}  # the decontamination threshold, in percent
    allowed.add(str(len({s.domain for s in SOURCES})))
    for value in paper.PAPER_SCALE.values():  # the paper's scale and cost (the paper-scale page)
        allowed |= {f"{v:g}" for v in (value if isinstance(value, tuple) else (value,)) if not isinstance(v, str)}
    return allowed


@pytest.mark.parametrize("page", [LANDING, ROOT / "book" / "paper_scale.md"], ids=lambda p: p.name)
def test_the_landing_page_types_no_number_of_ours(page):
    """Every number of ours on the landing page (and the paper-scale page) is glued from an executed notebook;
    what remains typed must be the paper's or the configuration's. Typing a result (say "-3.7 %") into the page
    makes this fail."""
    text = DIRECTIVE_OPTIONS.sub(r"\1", page.read_text())  # a directive's options (column widths) are layout
    text = re.sub(r"(?m)^```.*$", "", GLUE.sub("", text))  # fences (their contents stay checked)
    text = re.sub(r"\{[\w:]+\}`[^`]*`", "", text)  # roles (links to chapters) are not prose
    text = re.sub(r"\bk = \d+", "", text)  # a neighbour count named as such ("k = 50") is a setting
    text = re.sub(r"(?m)^\s*\d+\. |\bclaim \d\b", "", text)  # list numbers and claim numbers are structure
    rates = {StudyConfig().learning_rate, StudyConfig().adam_epsilon}  # written as 2e-5: the paper's settings
    text = re.sub(r"\b\d+(?:\.\d+)?e-\d+\b", lambda m: "" if float(m.group()) in rates else m.group(), text)
    text = re.sub(r"(\d)[-–](\d)", r"\1 \2", text)  # both ends of a range are checked
    typed = {_number(m.group()) for m in NUMBER.finditer(text)}
    assert typed, "the number pattern found nothing: the test would pass vacuously"
    stray = sorted(typed - allowed_numbers())
    assert not stray, f"numbers on the landing page that are neither glued nor the paper's/config's: {stray}"


def test_the_results_summary_glues_ours_and_the_verdict_from_notebooks_that_glue_them():
    table = LANDING.read_text().split("```{list-table}", 1)[1].split("```", 1)[0]
    rows = [row for row in table.split("\n* - ")[1:]]
    assert len(rows) >= 8  # the header and one row per claim
    for row in rows[1:]:
        cells = [c.strip() for c in re.split(r"\n  - ", row)]
        assert len(cells) == 4, cells
        ours, said = cells[2], cells[3]
        for cell in (ours, said):
            assert GLUE.fullmatch(cell), f"not a single glued value: {cell!r}"
        assert GLUE.fullmatch(said).group("key") == GLUE.fullmatch(ours).group("key") + "_verdict"
    for match in GLUE.finditer(table):
        notebook = ROOT / "notebooks" / f"{match.group('doc').removeprefix('executed/')}.py"
        source = notebook.read_text()
        key = match.group("key")
        base = key.removesuffix("_verdict")
        assert f'glue_text("{key}"' in source or f'glue_finding("{base}"' in source, (notebook.name, key)


def test_mark_for_book_hides_papermills_parameter_cell(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("k = 1", metadata={"tags": ["parameters", "remove-cell"]}),
        nbformat.v4.new_code_cell("k = 5", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(k)")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    mark_for_book(path)
    mark_for_book(path)  # idempotent
    tags = [c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells]
    assert tags == [["parameters", "remove-cell"], ["injected-parameters", "remove-cell"], []]


def test_every_notebook_hides_its_parameters_and_folds_its_code():
    for script in sorted((ROOT / "notebooks").glob("*.py")):
        cells = nbformat.read(script.with_suffix(".ipynb"), as_version=4).cells
        code = [c for c in cells if c.cell_type == "code"]
        assert "remove-cell" in code[0].metadata.get("tags", []) and "parameters" in code[0].metadata["tags"]
        assert "params_file" in code[0].source, script.name
        for cell in code[1:]:
            tags = cell.metadata.get("tags", [])
            assert {"hide-input", "remove-input", "remove-cell"} & set(tags), (script.name, cell.source[:80])
        assert "## Reproduce this page" in "".join(c.source for c in cells if c.cell_type == "markdown")
        if script.stem != "00_methods":  # a results chapter opens with its finding, glued under the title
            assert cells[0].source.startswith("# ") and FINDING_DIRECTIVE in cells[0].source, script.name
            assert any("show_finding(" in c.source for c in code), script.name


def test_reproduce_names_the_command_the_parameter_file_and_the_run_keys():
    text = reproduce("02_ttt", "params/study.yml", {"TTT-NN": "abc123"}, "artifacts").data
    assert "papermill notebooks/02_ttt.ipynb book/executed/02_ttt.ipynb -f params/study.yml" in text
    assert "`abc123`" in text and "artifacts/results/abc123.jsonl" in text


def test_the_results_figure_has_one_row_per_claim_of_the_landing_table(tmp_path):
    """report.CLAIMS is the landing table's claims (same keys, same chapters, FAMILY_CLAIMS of them); the figure
    reads each claim's numbers from what the chapter glued, and a chapter that has not run is a row 'not run'."""
    import re

    import nbformat

    from ttt_core.metrics import FAMILY_CLAIMS
    from ttt_core.report import CLAIMS, claims_frame, results_figure

    assert len(CLAIMS) == FAMILY_CLAIMS
    rows = LANDING.read_text().split("```{list-table}", 1)[1].split("```", 1)[0]
    table = re.findall(r"executed/(\w+)\.ipynb::(\w+)_verdict:s", rows)
    assert table == [(notebook, key) for notebook, key, _ in CLAIMS]
    data = {"percent": -3.0, "low": -4.0, "high": -2.0, "verdict": "reproduced", "note": "k = 3",
            "paper_percent": -12.5, "paper_note": "GPT-2 117M, k = 10"}
    output = nbformat.v4.new_output("display_data", data={"application/papermill.record/text/plain": repr(data)},
                                    metadata={"scrapbook": {"name": "ttt_change_data",
                                                            "mime_prefix": "application/papermill.record/"}})
    cell = nbformat.v4.new_code_cell("", outputs=[output])
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "02_ttt.ipynb")
    frame = claims_frame(tmp_path)
    assert len(frame) == FAMILY_CLAIMS
    first = frame.set_index("key").loc["ttt_change"]
    assert (first["percent"], first["low"], first["high"], first["paper_percent"]) == (-3.0, -4.0, -2.0, -12.5)
    assert (frame["verdict"] == "not run").sum() == FAMILY_CLAIMS - 1
    figure = results_figure(frame)
    assert f"{FAMILY_CLAIMS} claims: 1 reproduced" in figure.axes[0].get_title()


def test_a_chapter_opens_with_one_headline_per_claim_and_folds_the_rest(monkeypatch):
    """show_finding: the claims glued so far, each as one line (ours with its 95 % interval, the paper's change
    where it has one, the verdict), then the full text folded; without claims the text alone."""
    import ttt_core.report as report

    shown = {}
    monkeypatch.setattr("myst_nb.glue", lambda key, value, display=True: shown.update({key: value.data}))
    monkeypatch.setattr(report, "_GLUED", {})
    report.show_finding("The long text.")
    assert shown[report.FINDING] == "The long text."
    report._GLUED["ttt_change"] = {"percent": -5.4, "low": -7.4, "high": -3.6, "verdict": report.REPRODUCED,
                                   "paper_percent": -12.47, "paper_note": "GPT-2 117M, k = 10"}
    report.show_finding("The long text.")
    first, rest = shown[report.FINDING].split("\n\n", 1)
    assert first == ("**TTT-NN lowers bits per byte**: -5.4 % (95 % -7.4 to -3.6); the paper's GPT-2 117M, k = 10: "
                     f"-12.5 %. {report.VERDICT_MARKS[report.REPRODUCED]} reproduced")
    assert rest.startswith("<details>") and "The long text." in rest and rest.endswith("</details>")


def test_the_readme_is_a_front_door_whose_links_resolve():
    """README.md stays short (the history and the references live in the book) and every file it links or shows
    exists in the repository."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 130
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert targets, "the README links the paper"
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert not [t for t in local if not (ROOT / t).exists()], local
