"""Command line: `python -m ttt_core prepare -f params/study.yml` assembles the packaged models and builds
the corpus and the index of a configuration (what the notebooks would otherwise build on the spot)."""
from __future__ import annotations

import argparse
import time

import yaml

from .config import StudyConfig
from .study import prepare


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt_core")
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("-f", "--params", required=True, help="papermill-style YAML parameter file")
    args = parser.parse_args(argv)
    with open(args.params) as f:
        params = yaml.safe_load(f) or {}
    started = time.perf_counter()
    study = prepare(StudyConfig.from_params(**params))
    lm = study.language_model()  # assembles and converts the packaged LM once
    print(f"corpus {study.corpus.path} ({len(study.corpus)} documents), index {len(study.index)} vectors, "
          f"model {lm.name} ({lm.n_params / 1e6:.1f} M parameters) ready in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
