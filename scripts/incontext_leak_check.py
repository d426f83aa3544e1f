"""Is in-context's gain a leak? One check, run by hand, on the baselines chapter's documents.

    .venv/bin/python scripts/incontext_leak_check.py [WORK_DIR] > check.jsonl

For each test document of params/study.yml at k = 5, one per domain (the baselines chapter's default): its
log-likelihood alone, with its 5 nearest neighbours from the decontaminated index in the model's context, with
5 random chunks of its own domain, and with the 5 nearest from the leakage chapter's leaky index; for each, the
share of the document's 50-character n-grams found in those texts and the longest text it shares with any of them.
One JSON line per document; a last line with the paired mean changes and their 10-90 % bootstrap intervals.
The chapter itself (07_baselines) reports the first two and the overlap; the leaky arm is only here.
"""
import dataclasses
import json
import sys

import yaml

from ttt_core.baselines import in_context, text_overlap
from ttt_core.metrics import token_logprobs
from ttt_core.config import StudyConfig
from ttt_core.metrics import bootstrap_mean
from ttt_core.study import prepare


def main(work_dir: str = "artifacts") -> None:
    params = yaml.safe_load(open("params/study.yml"))
    names = {f.name for f in dataclasses.fields(StudyConfig)}
    params = {k: v for k, v in params.items() if k in names}
    config = StudyConfig.from_params(**{**params, "work_dir": work_dir, "k": 5, "docs_per_domain": 1})
    arms = {"nearest": config, "random-domain": dataclasses.replace(config, neighbors="random-domain"),
            "leaky nearest": dataclasses.replace(config, leaky_index=True)}
    studies = {name: prepare(c, progress=False) for name, c in arms.items()}
    lm = studies["nearest"].language_model()
    rows = []
    for doc in studies["nearest"].test_documents():
        tokens = lm.tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        row = {"id": doc["id"], "domain": doc["domain"],
               "alone": float(token_logprobs(lm.model, tokens, lm.prefix_token_id, lm.context_length).sum())}
        for name, study in studies.items():
            texts = [n.text for n in study.training_texts(doc)]
            row[name] = in_context(lm, doc["text"], texts)["loglik"]
            row[name + " overlap"] = text_overlap(doc["text"], texts, config.decontam_ngram)
        rows.append(row)
        print(json.dumps(row), flush=True)
    def change(a, b):  # mean % change of bits per byte from a to b per document, with its bootstrap interval
        x = [100 * (r[b] / r[a] - 1) for r in rows]
        return [round(v, 2) for v in bootstrap_mean(x, config.bootstrap_samples, config.seed)]

    print(json.dumps({"nearest vs alone": change("alone", "nearest"),
                      "random-domain vs alone": change("alone", "random-domain"),
                      "leaky nearest vs alone": change("alone", "leaky nearest"),
                      "nearest vs random-domain": change("random-domain", "nearest"),
                      "leaky vs nearest": change("nearest", "leaky nearest")}))


if __name__ == "__main__":
    main(*sys.argv[1:2])
