"""Command line.

- `python -m ttt_core run notebooks/02_ttt.ipynb [OUT] [-f params/study.yml] [-p k 5 ...]`: papermill with the
  parameters checked before the kernel starts, cell output streamed to the terminal and the chapter's finding
  printed at the end (OUT defaults to runs/<notebook>.ipynb);
- `python -m ttt_core prepare -f params/study.yml` assembles the packaged models and builds the corpus and the
  index of a configuration (what the notebooks would otherwise build on the spot);
- `python -m ttt_core mark-for-book book/executed/02_ttt.ipynb` hides papermill's injected parameter cell from
  the rendered page;
- `python -m ttt_core results-figure book/executed` draws the landing page's figure from the executed chapters;
- `python -m ttt_core parameters-page` writes the book's Parameters page from StudyConfig's field comments.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from .config import StudyConfig
from .params import study_parameters, with_overrides, write_parameters_page
from .study import failed_documents, failures_path, prepare


def main(argv=None) -> None:
    """The command line (`python -m ttt_core --help`); `argv` None reads sys.argv. Errors in the arguments exit with
    argparse's message (status 2)."""
    parser = argparse.ArgumentParser(prog="python -m ttt_core")
    parser.add_argument("command", choices=["run", "prepare", "mark-for-book", "results-figure", "ray-run", "parameters-page"])
    parser.add_argument("-f", "--params", help="papermill-style YAML parameter file (run, prepare, ray-run)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one parameter, read as papermill's -p reads it (after -f)")
    parser.add_argument("notebooks", nargs="*", help="run: the notebook and where to write it; mark-for-book: "
                                                     "executed notebooks; results-figure: the folder of executed "
                                                     "chapters (book/executed) and where to write the figure")
    scale = parser.add_argument_group("ray-run: the corpus here, then the index and TTT-NN on a Ray cluster")
    scale.add_argument("--address", default=None, help="a Ray cluster's address ('auto' on a node of it); "
                                                       "none: a local Ray instance on this machine")
    scale.add_argument("--workers", type=int, default=2, help="embedding and TTT-NN workers")
    scale.add_argument("--gpus-per-worker", type=float, default=0.0)
    scale.add_argument("--index-actors", type=int, default=2, help="actors holding the index shards")
    args = parser.parse_args(argv)
    if args.command == "mark-for-book":
        from .report import mark_for_book  # needs nbformat and IPython (the notebooks extra)

        if not args.notebooks:
            parser.error("mark-for-book needs executed notebooks: mark-for-book book/executed/02_ttt.ipynb")
        for path in args.notebooks:
            mark_for_book(path)
        return
    if args.command == "results-figure":
        from .report import write_results_figure

        if len(args.notebooks) > 2:
            parser.error("results-figure takes the executed chapters' folder and where to write: [EXECUTED [OUT]]")
        try:
            path = write_results_figure(*(args.notebooks or ["book/executed"]))
        except FileNotFoundError as error:
            parser.error(str(error))
        print(f"wrote {path}")
        return
    if args.command == "parameters-page":
        print(f"{'updated' if write_parameters_page() else 'unchanged'}: book/parameters.md")
        return
    if args.command == "run":
        from .notebook import run_notebook

        if len(args.notebooks) not in (1, 2):
            parser.error("run needs a notebook and optionally where to write it: run notebooks/02_ttt.ipynb [OUT]")
        params = _read_params(parser, args.params) if args.params else {}
        try:  # a bad name, value or path is refused before any kernel starts: a message, not a traceback
            return run_notebook(args.notebooks[0], args.notebooks[1] if len(args.notebooks) == 2 else None, params,
                                args.parameter, params_file=args.params or "")
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
    if not args.params:
        parser.error(f"{args.command} needs -f/--params, a papermill-style YAML parameter file")
    params = with_overrides(_read_params(parser, args.params), args.parameter)  # -p after -f, as `run` reads them
    if args.command == "ray-run":
        return ray_run(StudyConfig.from_params(**study_parameters(params)), args)
    started = time.perf_counter()
    study = prepare(StudyConfig.from_params(**study_parameters(params)))
    lm = study.language_model()  # assembles and converts the packaged LM once
    print(f"corpus {study.corpus.path} ({len(study.corpus)} documents), index {len(study.index)} vectors, "
          f"model {lm.name} ({lm.n_params / 1e6:.1f} M parameters) ready in {time.perf_counter() - started:.0f} s")


def _read_params(parser, path: str) -> dict:
    if not Path(path).is_file():
        parser.error(f"-f {path}: no such parameter file (the study's are params/*.yml)")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        parser.error(f"{path}: a parameter file is a YAML mapping of name: value lines, not a "
                     f"{type(params).__name__}")
    return params


def ray_run(config: StudyConfig, args) -> None:
    """The paper-scale path: corpus (this process, streamed), index shards embedded by Ray Data workers, shards
    held by Ray actors, documents spread over Ray workers; every stage resumes where a kill left it."""
    from . import scale
    from .corpus import build_corpus
    from .models import load_embedder
    from .study import Study, check

    check(config)
    scale.init(args.address)
    corpus = build_corpus(config)
    embedder = load_embedder(config.embedder, config.work_path, "cpu", config.seed, config.embedder_tokenizer)
    study = Study(config, corpus, embedder, None)
    if "shard_rows" not in corpus.manifest:
        raise ValueError(f"ray-run needs a corpus in the Pile layout (train/NN.jsonl.zst beside test.jsonl.zst), "
                         f"not corpus={config.corpus!r}; `make` runs the small corpora in one process")
    index = scale.build_index_ray(study, args.workers, args.gpus_per_worker)
    study = scale.study_on_ray(Study(config, corpus, embedder, index), args.index_actors)
    rows = scale.run_ttt_ray(study, args.workers, args.gpus_per_worker)
    failed = failed_documents(study)
    print(f"{len(rows)} documents finished, {len(failed)} failed (reasons in {failures_path(study)}); "
          f"results in {study.results_path}")


if __name__ == "__main__":
    main()
