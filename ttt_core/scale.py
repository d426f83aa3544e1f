"""Scale-out with Ray, an optional extra (`pip install -e '.[scale]'`); nothing else in ttt_core imports it.

The same code as one process, spread over workers, with the same results:
- `build_index_ray`: the Pile layout's shards embedded by a pool of Ray Data actors (GPUs where asked), each
  shard written by `shards.build_shards` exactly as a single-process build writes it (resumable);
- `RayShardedIndex`: shards held by actors, searched in parallel, the answers merged by `shards.merge_top_k`,
  the same rule as one process, so the neighbours equal one flat index's;
- `run_ttt_ray`: the pending documents of a run spread over worker actors, one document in flight per worker;
  only this driver appends to the run's results store, so no row is lost or written twice. A document whose
  retrieval or training fails, or whose worker dies, is recorded in `<run key>.failures.jsonl` with its reason
  and retried once (a dead worker is replaced); what still fails is reported, never dropped silently.

`ray.init()` with no address runs all of it on this machine; `ray.init(address=...)` (or RAY_ADDRESS) on a
cluster whose nodes share the work directory (the book's appendix, book/scale_out.md).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .config import StudyConfig
from .search import DenseSearch

WORKER_NAME = "ttt-worker-{}"  # named actors, so that a person (or a test) can find and stop one


def _ray():
    try:
        import ray
    except ImportError as missing:
        raise ImportError("ttt_core.scale needs Ray, an optional extra: pip install -e '.[scale]'") from missing
    return ray


def init(address: str | None = None, **kwargs) -> None:
    """Start (no address: on this machine) or join (an address) a Ray cluster, once."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **kwargs)


# ------------------------------------------------------------------------------------------------ the index
class _ShardEmbedder:
    """A Ray Data actor: loads the embedder once, then embeds batches of corpus rows read from the shared disk."""

    def __init__(self, params: dict, corpus_path: str, first_row: int):
        from .corpus import load_corpus
        from .models import load_embedder

        self.config = StudyConfig.from_params(**params)
        self.corpus = load_corpus(Path(corpus_path))
        self.embedder = load_embedder(self.config.embedder, self.config.work_path, self.config.device,
                                      self.config.seed, self.config.embedder_tokenizer)
        self.first_row = first_row

    def __call__(self, batch: dict) -> dict:
        rows = np.asarray(batch["data"], dtype=np.int64) + self.first_row
        vectors = self.embedder.encode(self.corpus.texts(rows), self.config.embed_max_tokens)
        return {"row": rows, "vector": vectors}


def build_index_ray(study, workers: int = 2, gpus_per_worker: float = 0.0, batch_size: int = 256,
                    progress: bool = True):
    """The sharded index of `study` (a Pile-layout corpus), each shard's rows embedded by `workers` Ray Data
    actors; the shards are those `prepare` builds in one process and skips once they exist."""
    ray = _ray()
    from .index import build_sharded_index, recall_sample

    config, corpus, embedder = study.config, study.corpus, study.embedder
    params = config.as_dict()

    def batches_for(start: int, stop: int):
        def embedded():
            # rows from the driver's memory, not a read task: a read task would wait for a CPU that the actor
            # pool holds (on a 2-CPU machine the pipeline would never start)
            data = ray.data.from_numpy(np.arange(stop - start)).map_batches(
                _ShardEmbedder, fn_constructor_args=(params, str(corpus.path), start), batch_size=batch_size,
                concurrency=workers, num_gpus=gpus_per_worker or None, num_cpus=None if gpus_per_worker else 1)
            for batch in data.iter_batches(batch_size=batch_size, batch_format="numpy"):
                yield batch["row"], batch["vector"]
        return embedded

    return build_sharded_index(config, corpus, batches_for, embedder.dim, "ip" if embedder.normalize else "l2",
                               progress, lambda: recall_sample(config, corpus, embedder))


class _ShardSearcher:
    """A Ray actor holding some shards of a sharded index; answers with their merged top-k."""

    def __init__(self, folder: str, names: list[str], settings: dict):
        from .shards import ShardedIndex

        self.index, self.names = ShardedIndex(folder, **settings), names

    def search(self, queries: np.ndarray, k: int):
        """The exact top-`k` of `queries` ((n, dim) float32) over this actor's shards: (squared L2 distances, corpus
        rows), each (n, k), as `ShardedIndex.search`."""
        return self.index.search(queries, k, self.names)


class RayShardedIndex(DenseSearch):
    """A `shards.ShardedIndex` whose shards are spread over `actors` Ray actors (round robin): the same search
    answer, since the top-k of each actor's top-k is the top-k over all shards (one merge rule). A
    `search.Retriever` (its text search embeds, then `search`)."""

    def __init__(self, folder: Path | str, actors: int = 2, handles: list | None = None, settings: dict | None = None):
        ray = _ray()
        from .shards import ShardedIndex

        self.local = ShardedIndex(folder, **(settings or {}))  # settings: exact, or the approximate shards'
        settings = self.local.settings()
        if handles is None:  # start the actors; a worker is given the driver's (`handles`) instead
            groups = [self.local.shards[i::actors] for i in range(min(actors, len(self.local.shards)))]
            searcher = ray.remote(num_cpus=0)(_ShardSearcher)  # searching is memory-bound: no CPU reserved
            handles = [searcher.remote(str(folder), names, settings) for names in groups]
        self.actors = handles

    meta = property(lambda self: self.local.meta)
    metric = property(lambda self: self.local.metric)
    rows = property(lambda self: self.local.rows)
    shards = property(lambda self: self.local.shards)

    def __len__(self) -> int:
        return len(self.local)

    def search(self, queries: np.ndarray, k: int):
        """The exact top-`k` of `queries` ((n, dim) float32) over every actor's shards: (squared L2 distances, corpus
        rows), each (n, k), merged as one search over all shards would rank them (`shards.merge_top_k`: ties by
        row)."""
        ray = _ray()
        from .shards import merge_top_k

        answers = ray.get([actor.search.remote(np.ascontiguousarray(queries, dtype=np.float32), k)
                           for actor in self.actors])
        return merge_top_k([a[0] for a in answers], [a[1] for a in answers], k)


# ------------------------------------------------------------------------------------------------- TTT-NN
class _TTTWorker:
    """A Ray actor: prepares the study once (corpus, embedder, index, model from the shared work directory),
    then runs one document at a time, keeping its optimizer across documents as `run_ttt` does."""

    def __init__(self, params: dict, index: tuple | None = None):
        from .study import prepare

        self.study = prepare(StudyConfig.from_params(**params), progress=False)
        if index is not None:  # (folder, actor handles, settings): search the driver's shard actors, not the disk
            self.study = dataclasses.replace(self.study, index=RayShardedIndex(index[0], handles=index[1],
                                                                               settings=index[2]))
        self.optimizer = None

    def run(self, doc: dict) -> dict:
        """TTT-NN on one test document with this worker's model (`study.ttt_document`); returns its result row."""
        from .study import ttt_document

        row, self.optimizer = ttt_document(self.study, doc, self.optimizer)
        return row


def run_ttt_ray(study, workers: int = 2, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
                retries: int = 1, progress: bool = True) -> list[dict]:
    """`study.run_ttt` with the pending documents spread over `workers` Ray actors. Returns the rows of the
    documents that finished, in document order; failures are in `failures_path(study)` and warned about."""
    ray = _ray()
    from tqdm import tqdm

    from .study import finished_rows, open_run, record_failure

    if not study.config.reset_optimizer:
        raise ValueError("invalid reset_optimizer=False for a distributed run: the carried Adam moments would "
                         "depend on which worker ran which document; run it in one process (run_ttt)")
    init()
    store, docs, pending = open_run(study)
    params = study.config.as_dict()
    index = ((str(study.index.local.folder), study.index.actors, study.index.local.settings())
             if isinstance(study.index, RayShardedIndex) else None)
    worker_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(_TTTWorker)

    def start_worker(i: int):
        return worker_class.options(name=WORKER_NAME.format(i)).remote(params, index)

    actors = {i: start_worker(i) for i in range(min(workers, len(pending)))}
    next_name = len(actors)
    queue = [(doc, 1) for doc in pending]  # (document, attempt)
    in_flight = {}  # object ref -> (actor id, document, attempt)
    bar = tqdm(total=len(pending), desc=f"TTT-NN k={study.config.k} on {len(actors)} Ray workers", unit="doc",
               disable=not progress)
    while queue or in_flight:
        busy = {i for i, _, _ in in_flight.values()}
        for i in [i for i in actors if i not in busy]:
            if queue:  # one document in flight per worker: a dead worker takes only that one with it
                doc, attempt = queue.pop(0)
                in_flight[actors[i].run.remote(doc)] = (i, doc, attempt)
        done, _ = ray.wait(list(in_flight), num_returns=1)
        i, doc, attempt = in_flight.pop(done[0])
        try:
            store.append(ray.get(done[0]))  # only the driver writes: no row lost or duplicated
            bar.update()
        except Exception as error:  # noqa: BLE001 - recorded with its reason, retried once, then reported
            died = isinstance(error, ray.exceptions.RayActorError)
            record_failure(study, doc, attempt, getattr(error, "cause", None) or error,  # the task's own error
                           worker_died=died)
            if died:  # a replacement takes its place (the dead one's name is free again)
                actors.pop(i)
                actors[next_name] = start_worker(next_name)
                next_name += 1
            if attempt <= retries:
                queue.append((doc, attempt + 1))
            else:
                bar.update()
    bar.close()
    for actor in actors.values():
        ray.kill(actor)
    return finished_rows(study, store, docs, retries, allow_failures=True)


def study_on_ray(study, index_actors: int = 2):
    """The same study with its sharded index held by Ray actors (`RayShardedIndex`)."""
    from .shards import ShardedIndex

    if not isinstance(study.index, ShardedIndex):
        raise ValueError("study_on_ray needs a study on a corpus in the Pile layout (a sharded index)")
    return dataclasses.replace(study, index=RayShardedIndex(study.index.folder, index_actors,
                                                            settings=study.index.settings()))
