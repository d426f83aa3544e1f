"""Static embedders: a token -> vector table distilled offline from a packaged sentence encoder with model2vec
(Tulkens & van Dongen 2024), embedded by a mean over the table's rows, no transformer pass. At 100,000+ chunks
on a 2-core CPU this is what an exact index can afford (a deviation from the paper's RoBERTa-large, DEVIATIONS).

A distilled folder is written once under `<work_dir>/models/<name>` with `distilled.json` (teacher, model2vec
version, settings, sha256 of every saved file); every load verifies those hashes, so a changed file is an error,
not other vectors under the same name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# name -> packaged teacher embedder
STATIC_EMBEDDERS = {"minilm-static": "minilm"}
# model2vec 0.10.0's own defaults of distill_from_model, written out so that the record says what was used.
DISTILL_SETTINGS = {"pca_dims": 256, "sif_coefficient": 1e-4, "token_remove_pattern": r"\[unused\d+\]",
                    "quantize_to": "float16", "pooling": "mean", "vocabulary": None}
RECORD = "distilled.json"
# Version of the folder's layout. 2: config.json names the teacher and the model card is left out, since model2vec
# writes the teacher's absolute path into both (the same weights had a different record, so different run keys,
# in every checkout).
FORMAT = 2


def _model2vec_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("model2vec")


def distill_folder(model, tokenizer, folder: Path, teacher: dict) -> dict:
    """Distil `model` (a transformers encoder) with its fast `tokenizer` into a model2vec folder, written
    atomically with its record (`teacher` says what was distilled). Returns the record."""
    from model2vec.distill import distill_from_model

    settings = {k: v for k, v in DISTILL_SETTINGS.items() if k != "vocabulary"}
    static = distill_from_model(model, tokenizer, device="cpu", vocabulary=None, **settings)
    from .files import atomic_folder, sha256_file

    with atomic_folder(folder) as tmp:
        static.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        config["tokenizer_name"] = teacher["name"]  # model2vec writes the teacher's absolute path here
        (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        (tmp / "README.md").unlink(missing_ok=True)  # the model card: that path again, and no bearing on vectors
        record = {"format": FORMAT, "teacher": teacher, "model2vec": _model2vec_version(),
                  "settings": DISTILL_SETTINGS, "dim": int(static.dim),
                  "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}}
        (tmp / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
    return record


def verified_record(folder: Path) -> dict:
    """The distillation record of `folder`, after checking the sha256 of every file it lists (and that no
    listed file is missing). Raises RuntimeError on a mismatch, naming the file and what to do."""
    from .files import sha256_file

    record = json.loads((Path(folder) / RECORD).read_text())
    for name, want in record["files"].items():
        path = Path(folder) / name
        got = sha256_file(path) if path.exists() else "missing"
        if got != want:
            raise RuntimeError(f"the distilled static embedder at {folder} does not match its record: {name} has "
                               f"sha256 {got}, recorded {want}; delete {folder} to distil it again")
    return record


def assemble_static(name: str, cache: Path, assemble_packaged) -> Path:
    """The distilled folder of the static embedder `name` under `cache` (`<work_dir>/models`): distilled from its
    packaged teacher on first use (minutes for MiniLM on a CPU), verified against its record on every use. The
    teacher comes from `assemble_packaged(teacher name, cache) -> (folder, record)` (`models.assemble_packaged`,
    passed in: models loads static embedders through this module, so this module does not import models)."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(cache) / name
    if not (folder / RECORD).exists() or json.loads((folder / RECORD).read_text()).get("format") != FORMAT:
        teacher_folder, teacher = assemble_packaged(STATIC_EMBEDDERS[name], Path(cache))
        model = AutoModel.from_pretrained(teacher_folder).float().eval()
        distill_folder(model, AutoTokenizer.from_pretrained(teacher_folder), folder,
                       {"name": STATIC_EMBEDDERS[name], "sha256": teacher["sha256"], "packages": teacher["packages"]})
    verified_record(folder)
    return folder


@dataclass
class StaticEmbedder:
    """A model2vec table behind the `models.Embedder` contract: encode(texts, max_tokens) -> float32 [n, dim],
    unit rows (normalize=True: the faiss index stores inner products, distances are 2 - 2 cos). `max_tokens`
    truncates each text to its first tokens of the static tokenizer, as the transformer embedders do; None is
    `declared_max_tokens` (the teacher's declared limit, so both embed the same text)."""
    model: object  # model2vec.StaticModel
    name: str
    provenance: dict
    declared_max_tokens: int
    normalize: bool = True

    @property
    def dim(self) -> int:
        """The embedding width (vectors are (n, dim) float32)."""
        return int(self.model.dim)

    @property
    def max_positions(self) -> int:  # a table has no positions; the limit is what a text may hold
        return 1 << 20

    def max_tokens(self, requested: int | None = None) -> int:
        """`embed_max_tokens` resolved: None is the declared limit; anything but a positive integer is refused."""
        if requested is None:
            return self.declared_max_tokens
        if not isinstance(requested, int) or requested < 1:
            raise ValueError(f"invalid embed_max_tokens={requested!r}: expected None (embedder {self.name!r}'s "
                             f"declared limit, {self.declared_max_tokens}) or a positive integer")
        return requested

    def encode(self, texts: list[str], max_tokens: int | None = None, batch_size: int = 1024,
               progress: bool = False) -> np.ndarray:
        """Mean of the table's token vectors over each text's first `max_tokens` tokens, normalised: float32
        [len(texts), dim]; an empty text (no token) is the zero vector."""
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode([t or " " for t in texts], max_length=self.max_tokens(max_tokens),
                                batch_size=batch_size, show_progress_bar=progress)
        out = np.asarray(out, dtype=np.float32)
        if self.normalize:  # model2vec normalises too; again here so the contract never rests on its config
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.where(norms > 0, out / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
        return np.nan_to_num(out)


def load_static(folder: Path, name: str, declared_max_tokens: int) -> StaticEmbedder:
    """The verified static embedder in `folder` (RuntimeError if a file differs from its record)."""
    from model2vec import StaticModel

    record = verified_record(folder)
    model = StaticModel.from_pretrained(str(folder), normalize=True, max_length=None)
    return StaticEmbedder(model, name, dict(record, name=name, declared_max_tokens=declared_max_tokens),
                          declared_max_tokens)


def static_identity(name: str, work_dir: Path | str = "artifacts") -> dict:
    """What identifies a static embedder's vectors for run keys and index caches, without loading it: its
    distillation record (teacher and its hash, model2vec version, settings, sha256 of every file)."""
    record = Path(work_dir) / "models" / name / RECORD
    if not record.exists():
        return {"static": name, "files": "not distilled yet"}
    return {"static": name, **json.loads(record.read_text())}
