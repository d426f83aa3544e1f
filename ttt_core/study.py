"""The study's stages wired together: config -> corpus -> embedder -> index -> TTT-NN per test document.

Every stage is cached on disk and rebuilt only when its inputs change; names are checked before any
expensive work so that a typo fails in a second, not after an hour of embedding.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .config import StudyConfig
from .corpus import Corpus, build_corpus, pile_layout
from .files import content_key
from .index import indexed_identity
from .models import (PACKAGED, Embedder, LanguageModel, check_installed, check_model_name, load_embedder,
                     load_language_model, weights_identity)
from .results import ResultsStore, cut_row, evaluated_at, long_frame, reusable_stores, same_neighbor_stores
from .retrieve import indexed_domains, random_neighbors, retrieve, selected_neighbors
from .retrievers import build_retriever
from .search import Retriever
from .ttt import make_optimizer, split_query_and_scored, test_time_train


@dataclass
class Study:
    """Everything one configuration runs on, built once by `prepare(config)`: the corpus, the embedder, the index
    (any `search.Retriever`) and, loaded on first use, the language model. `run_key` names its result rows."""
    config: StudyConfig
    corpus: Corpus
    embedder: Embedder | None  # None for retriever='bm25'
    index: Retriever  # any index kind (`search.Retriever`): a dense index for 'dense', else a `retrievers` one
    lm: LanguageModel | None = None
    # (config, index, content identity) last computed: a key is asked for often, a local folder is hashed once
    _identity: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def pile_set_names(self) -> dict[str, str]:
        """Corpus domain -> the Pile task it stands for (the key of the Pile weights)."""
        return self.corpus.manifest["pile_set_name"]

    def language_model(self) -> LanguageModel:
        """The configuration's language model, loaded (and for a packaged one assembled) on first use."""
        if self.lm is None:
            self.lm = load_language_model(self.config.model, self.config.work_path, self.config.device,
                                          self.config.seed, self.config.score_prefix)
        return self.lm

    def test_documents(self) -> list[dict]:
        """The test documents this configuration runs: docs_per_domain per domain, or the paper's test_portion."""
        config = self.config
        return self.corpus.test_documents(config.docs_per_domain, config.seed, config.domains, config.test_portion,
                                          config.split_seed)

    def training_texts(self, document: dict, query: str | None = None) -> list:
        """The k train chunks a document is trained on under `config.neighbors`: its nearest neighbours for
        `query` (default: its text), or a random-chunk control."""
        config = self.config
        if config.neighbors != "nearest":
            return random_neighbors(document, config.k, config.neighbors, self.index, self.corpus, config.seed)
        exclude = self.own_source_rows(document) if config.leaky_index else ()
        if config.selection != "nearest":
            return selected_neighbors(document["text"] if query is None else query, config.k, config.selection,
                                      config.selection_pool, self.embedder, self.index, self.corpus,
                                      config.embed_max_tokens, exclude, config.sift_lambda)
        return retrieve(document["text"] if query is None else query, config.k, self.embedder, self.index,
                        self.corpus, config.embed_max_tokens, exclude)

    def own_source_rows(self, document: dict) -> list[int]:
        """Corpus rows of the document's own source file (left out of the leaky index's results)."""
        cache = self.corpus.cache
        if "source_rows" not in cache:  # (setdefault read both columns again on every call: 3 s at 10^5 chunks)
            cache["source_rows"] = (np.asarray(self.corpus.dataset["source_id"]),
                                    np.asarray(self.corpus.dataset["domain"]))
        sources, domains = cache["source_rows"]
        return np.flatnonzero((sources == document["source_id"]) & (domains == document["domain"])).tolist()

    def content_identity(self) -> dict:
        """What the configuration names but does not pin, for the run key: what the index holds (with the
        embedder's weights, `index_fingerprint`), the language model's and embedder's weights (read from files
        and caches: nothing is loaded) and the versions of the libraries that compute a row. Computed once per
        (config, index) of this Study."""
        config = self.config
        if self.index is None:
            raise ValueError("a run key needs the study's index (prepare() builds it): it names what was indexed")
        if self._identity is None or self._identity[0] != config or self._identity[1] is not self.index:
            # BM25 never loads the embedder: its name and weights are not inputs of a BM25 row
            embedder = None if config.retriever == "bm25" else weights_identity(config.embedder, "embedder",
                                                                               config.work_path)
            if config.embedder_tokenizer and embedder is not None:
                embedder["tokenizer"] = weights_identity(config.embedder_tokenizer, "tokenizer", config.work_path)
            self._identity = (config, self.index, {
                "index_fingerprint": content_key({"index": indexed_identity(self.index), "embedder": embedder}),
                "lm_weights": weights_identity(config.model, "lm", config.work_path),
                "embedder_weights": embedder,
                "libraries": library_versions()})
        return self._identity[2]

    def result_inputs(self) -> dict:
        """Everything that changes a per-document result of this study (`StudyConfig.result_inputs` with the
        content identities): what a run's results file is named by and what its `.config.json` holds."""
        return self.config.result_inputs(self.corpus.fingerprint, self.content_identity())

    @property
    def run_key(self) -> str:
        """The name of this run's results: the configuration and the content it runs on (`result_inputs`)."""
        return self.config.run_key(self.corpus.fingerprint, self.content_identity())

    @property
    def results_path(self) -> Path:
        """work_path/results/<run key>.jsonl: this run's rows (`results.ResultsStore`)."""
        return self.config.work_path / "results" / f"{self.run_key}.jsonl"


# Libraries whose version can change a row's numbers (gguf dequantizes the packaged models' weights); a row is
# keyed by them, so an upgrade computes new rows instead of mixing old ones in.
KEYED_LIBRARIES = ("torch", "transformers", "tokenizers", "faiss", "numpy", "gguf")


def library_versions() -> dict[str, str]:
    """The version of each of KEYED_LIBRARIES as this process has it: the imported module's `__version__`, else
    the installed distribution's, else 'not installed'."""
    import importlib
    import importlib.metadata
    import sys

    versions = {}
    for name in KEYED_LIBRARIES:
        module = sys.modules.get(name)
        if module is None and name in ("torch", "transformers", "tokenizers", "faiss", "numpy"):
            module = importlib.import_module(name)  # each is imported by any study anyway
        version = getattr(module, "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = "not installed"
        versions[name] = str(version)
    return versions


def check(config: StudyConfig) -> StudyConfig:
    """All cheap checks: parameter values, model and embedder names, their packages."""
    config.validate()
    if config.corpus != "minipile" and pile_layout(config.corpus) is not None:
        # The Pile is indexed whole, shard by shard (exact as the paper, or approximate per shard); the ablations
        # of the small corpus need one index in memory.
        for name, ok, valid in (("decontam_threshold", config.decontam_threshold is None, "None (the paper's)"),
                                ("index_fraction", config.index_fraction == 1.0, "1.0"),
                                ("leaky_index", not config.leaky_index, "False"),
                                ("selection", config.selection == "nearest", "'nearest'"),
                                # BM25 and re-ranking hold one index of every chunk in memory; a Pile layout is
                                # searched shard by shard, dense only.
                                ("retriever", config.retriever == "dense", "'dense'")):
            if not ok:
                raise ValueError(f"invalid {name}={getattr(config, name)!r} for a corpus in the Pile layout "
                                 f"({config.corpus}): expected {valid}")
    # BM25 never loads the embedder: a name it does not use is not checked
    for name, kind in ((config.model, "lm"), *(() if config.retriever == "bm25" else ((config.embedder, "embedder"),))):
        if check_model_name(name, kind) == "packaged":
            check_installed(PACKAGED[name])
    if config.retriever == "rerank":
        from .retrievers import first_stage_names

        for name in first_stage_names(config.rerank_from):
            if name == "bm25":
                continue
            try:
                if check_model_name(name, "embedder") == "packaged":
                    check_installed(PACKAGED[name])
            except ValueError as err:
                raise ValueError(f"invalid rerank_from={config.rerank_from!r}: first stage {name!r} is neither "
                                 f"'bm25' nor a dense embedder ({err})") from None
    return config


def prepare(config: StudyConfig, progress: bool = True) -> Study:
    """Corpus, embedder and index for `config`, built where missing."""
    check(config)
    corpus = build_corpus(config, progress)
    corpus.check_domains(config.domains)  # a name the corpus lacks fails here, before the embedder and the index
    embedder = run_embedder(config)
    return Study(config, corpus, embedder, build_retriever(config, corpus, embedder, progress))


def run_embedder(config: StudyConfig, loaded: tuple[StudyConfig, Embedder] | None = None) -> Embedder | None:
    """The embedder a run queries with (None for BM25, which embeds nothing); `loaded` (a config and its
    embedder) is reused when it names the same embedder on the same device."""
    if config.retriever == "bm25":
        return None
    names = ("embedder", "embedder_tokenizer", "device", "seed", "work_dir")
    if loaded is not None and loaded[1] is not None and all(
            getattr(config, n) == getattr(loaded[0], n) for n in names):
        return loaded[1]
    return load_embedder(config.embedder, config.work_path, config.device, config.seed, config.embedder_tokenizer)


def vary(study: Study, **changes) -> Study:
    """The same study under changed parameters (another index size, retriever, embedder or model): the corpus
    object is reused, so its cached measures (decontamination) are computed once; the embedder and the language
    model are reused while their settings stay; the index is built (or loaded from its cache) for the new
    settings. ValueError when a change would need another corpus (a chapter compares runs on one corpus)."""
    import dataclasses

    from .corpus import corpus_folder

    config = check(StudyConfig.from_params(**{**study.config.as_dict(), **changes}))
    if corpus_folder(config) != study.corpus.path:
        changed = sorted(name for name in changes if name in CORPUS_PARAMETERS)
        raise ValueError(f"vary() keeps the study's corpus, but {changed or list(changes)} change it: use "
                         f"prepare() for another corpus")
    embedder = run_embedder(config, (study.config, study.embedder))
    index = build_retriever(config, study.corpus, embedder, progress=False)
    same_lm = all(getattr(config, n) == getattr(study.config, n) for n in ("model", "device", "seed", "score_prefix",
                                                                          "work_dir"))
    lm = study.lm if same_lm else None
    return dataclasses.replace(study, config=config, embedder=embedder, index=index, lm=lm)


# The parameters that name the corpus (a change builds another one).
CORPUS_PARAMETERS = ("corpus", "domain_bytes", "chunk_bytes", "test_fraction", "split_by", "split_seed", "work_dir")


def open_run(study: Study) -> tuple[ResultsStore, list[dict], list[dict]]:
    """The run's results store, with the rows other runs already hold for it (cut from a run with more
    neighbours), its documents, and those still pending."""
    config = study.config
    store = ResultsStore(study.results_path)
    inputs = study.result_inputs()
    study.results_path.with_suffix(".config.json").write_text(json.dumps(inputs, indent=1))
    docs = study.test_documents()
    check_neighbor_supply(study, docs)
    retrieved = {}  # the neighbour ids this run trains a document on, retrieved once, only where a row could serve
    for donor in reusable_stores(study.results_path.parent, inputs):
        for doc in docs:
            row = donor.rows.get(doc["id"])
            if doc["id"] in store or not evaluated_at(row, config.k):
                continue
            # A cut row is this run's only if it trained on the neighbours this run retrieves (another tie order
            # or another index build gives others), as `ttt_document` checks for `same_neighbor_stores`.
            if doc["id"] not in retrieved:
                retrieved[doc["id"]] = [n.doc_id for n in study.training_texts(doc, retrieval_query(study, doc)[0])]
            if row["neighbors"][:config.k] == retrieved[doc["id"]]:
                store.append(cut_row(row, config.k))
    pending = [d for d in docs if d["id"] not in store]
    if pending and not config.reset_optimizer and len(pending) < len(docs):
        warnings.warn("resuming a run with reset_optimizer=False: the Adam moments carried from the finished "
                      "documents are lost, so the remaining rows are not what an uninterrupted run gives")
    return store, docs, pending


def check_neighbor_supply(study: Study, docs: list[dict]) -> None:
    """Refuse, before any training, a k (or selection pool) larger than the chunks the run's neighbour rule can
    draw for some document: such a run would store rows with fewer neighbours than the k it is keyed by.

    Counts per rule: 'nearest' the whole index; the leaky index without the document's own source rows;
    'random-domain' the indexed chunks of the document's domain; 'random-any' the whole index; SIFT/HullFT the
    `selection_pool` (0: 4 k) nearest candidates. Raises ValueError naming k, the rule and the count available."""
    config = study.config
    if config.k == 0 or not docs:
        return
    need, rule = config.k, config.neighbors
    if config.neighbors == "nearest" and config.selection != "nearest":
        need, rule = config.selection_pool or 4 * config.k, f"selection={config.selection!r} (its candidate pool)"
    if config.neighbors == "random-domain":
        domains = indexed_domains(study.index, study.corpus)
        available = {d["domain"]: int((domains == d["domain"]).sum()) for d in docs}
        short = {domain: n for domain, n in available.items() if n < need}
        if short:
            domain, n = min(short.items(), key=lambda item: item[1])
            raise ValueError(f"k={config.k} is larger than what neighbors='random-domain' can draw: domain "
                             f"{domain!r} has only {n} indexed chunks ({len(short)} of {len(available)} domains "
                             f"have fewer than {need}); use a smaller k or a larger corpus")
        return
    available, where = len(study.index), f"the index of {len(study.index)} chunks"
    if config.leaky_index:
        rows = set(study.index.rows.tolist())
        available = min(len(rows - set(study.own_source_rows(d))) for d in docs)
        rule, where = "leaky_index (the document's own source left out)", "a document's leaky index"
    if available < need:
        raise ValueError(f"k={config.k} is larger than what {rule if rule != 'nearest' else 'neighbors=' + repr(rule)}"
                         f" can draw: {need} needed, {where} holds only {available}; use a smaller k or a larger "
                         f"corpus")


def retrieval_query(study: Study, doc: dict) -> tuple[str, dict]:
    """(the text a document's neighbours are retrieved for, the document as scored): its whole text, or with
    `split_query` its first part and the rest."""
    if not study.config.split_query:
        return doc["text"], doc
    query, text = split_query_and_scored(study.language_model().tokenizer, doc["text"])
    return query, dict(doc, text=text)


def ttt_document(study: Study, doc: dict, optimizer=None, same_neighbors=()) -> tuple[dict, object]:
    """One document's result row and the optimizer to pass to the next document (one per run: reset in place
    between documents, or carried with reset_optimizer=False). A run in `same_neighbors` that retrieved the same
    neighbours for it already holds the row: it is copied rather than retrained."""
    config = study.config
    query, scored = retrieval_query(study, doc)
    neighbors = study.training_texts(doc, query)
    ids = [n.doc_id for n in neighbors]
    donor = next((row for row in (s.rows.get(doc["id"]) for s in same_neighbors)
                  if evaluated_at(row, config.k) and row["neighbors"][:config.k] == ids), None)
    if donor is not None:
        return cut_row(donor, config.k), optimizer
    lm = study.language_model()
    if optimizer is None:
        optimizer = make_optimizer(lm.model, config)
    return test_time_train(lm, scored, neighbors, config, optimizer), optimizer


def run_ttt(study: Study, progress: bool = True, retries: int = 1, allow_failures: bool = False) -> list[dict]:
    """TTT-NN on every sampled test document; finished documents are read back, not recomputed
    (`scale.run_ttt_ray` spreads the same work over Ray workers). A document whose retrieval or training raises is
    recorded in `failures_path(study)` with its reason and retried once after the others; if it fails again, the
    run ends with an error naming it (the finished rows are kept), or with `allow_failures` a warning, and only the
    finished rows are returned. Three failures in a row, or any with reset_optimizer=False, stop the run at once."""
    from tqdm import tqdm

    store, docs, pending = open_run(study)
    last_error = None
    if pending:
        same_neighbors = same_neighbor_stores(study.results_path.parent, study.result_inputs())
        optimizer, in_a_row = None, 0
        queue = [(doc, 1) for doc in pending]  # (document, attempt)
        bar = tqdm(total=len(pending), desc=f"TTT-NN k={study.config.k}", unit="doc", disable=not progress)
        while queue:
            doc, attempt = queue.pop(0)
            try:
                row, optimizer = ttt_document(study, doc, optimizer, same_neighbors)
            except Exception as error:  # noqa: BLE001 - recorded with its reason, retried once, then reported
                record_failure(study, doc, attempt, error)
                last_error, in_a_row = error, in_a_row + 1
                # Carried Adam moments (reset_optimizer=False) make a retry out of order give another result, and
                # three failures in a row are the code's or the machine's, not a document's: stop at once.
                if not study.config.reset_optimizer or in_a_row >= 3:
                    bar.close()
                    why = ("3 in a row" if in_a_row >= 3 else
                           "with reset_optimizer=False, a retry would change the carried moments")
                    reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    raise RuntimeError(f"document {doc['id']!r} failed ({why}; the last error: {reason}); the "
                                       f"finished rows are kept and the next run resumes; reasons in "
                                       f"{failures_path(study)}") from error
                if attempt <= retries:
                    queue.append((doc, attempt + 1))
                    continue
            else:
                store.append(row)
                in_a_row = 0
            bar.update()
        bar.close()
    return finished_rows(study, store, docs, retries, allow_failures, last_error)


def finished_rows(study: Study, store: ResultsStore, docs: list[dict], retries: int, allow_failures: bool,
                  cause: BaseException | None = None) -> list[dict]:
    """The rows of the documents that finished, in document order; documents without one are reported (an error
    chained to `cause`, or with `allow_failures` a warning), never dropped silently."""
    failed = [d["id"] for d in docs if d["id"] not in store]
    if failed:
        message = (f"{len(failed)} of {len(docs)} documents failed {retries + 1} times and have no result (for "
                   f"example {failed[0]!r}); their reasons are in {failures_path(study)}")
        if not allow_failures:
            raise RuntimeError(message + "; the finished rows are kept and the next run resumes") from cause
        warnings.warn(message)
    return [store.rows[d["id"]] for d in docs if d["id"] in store]


def failures_path(study: Study) -> Path:
    """Beside the results: <run key>.failures.jsonl, one line per failed attempt with its reason."""
    return study.results_path.with_name(study.results_path.stem + ".failures.jsonl")


def record_failure(study: Study, doc: dict, attempt: int, error: BaseException, worker_died: bool = False) -> None:
    """Append one failed attempt, with its reason, to the run's failure log (kept beside its results)."""
    import time

    reason = (f"{type(error).__name__}: {error}".splitlines() or [""])[0][:500]
    with open(failures_path(study), "a", encoding="utf-8") as f:
        f.write(json.dumps({"doc_id": doc["id"], "attempt": attempt, "worker_died": worker_died,
                            "reason": reason, "time": time.time()}) + "\n")


def failed_documents(study: Study) -> dict[str, list[dict]]:
    """Every recorded failure of the run, by document, for documents that have no result row (yet)."""
    path, finished = failures_path(study), ResultsStore(study.results_path)
    failures: dict[str, list[dict]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["doc_id"] not in finished:
                failures.setdefault(record["doc_id"], []).append(record)
    return failures


def ttt_change(study: Study, rows: list[dict], k: int | None = None) -> metrics.PairedChange:
    """TTT-NN at k (default: the run's k) against no training, paired on the run's documents."""
    config = study.config
    return metrics.ttt_change(long_frame(rows), config.k if k is None else k, study.pile_set_names,
                              config.bootstrap_samples, config.seed)


def compare(study: Study, rows_a: list[dict], k_a: int, rows_b: list[dict], k_b: int) -> metrics.PairedChange:
    """Two runs on the same documents (another index, embedder or model): B at k_b against A at k_a."""
    config = study.config
    return metrics.paired_change(metrics.documents_at(long_frame(rows_a), k_a),
                                 metrics.documents_at(long_frame(rows_b), k_b), study.pile_set_names,
                                 config.bootstrap_samples, config.seed)


def summarize(study: Study, rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bpb table: domains x k with the Pile-weighted row, bootstrap intervals in long form)."""
    frame = long_frame(rows)
    table = metrics.bpb_table(frame, study.pile_set_names)
    intervals = metrics.bootstrap_bpb(frame, study.pile_set_names, study.config.bootstrap_samples,
                                      study.config.seed)
    return table, intervals
