"""The benchmark runner's arithmetic and its reference protocol (no timing is asserted: speed is measured by
benchmarks/run.py, never by tests)."""
import sys

import pytest

from conftest import ROOT
from ttt_core.config import StudyConfig
from ttt_core.models import load_language_model
from ttt_core.retrieve import Neighbor
from ttt_core.ttt import test_time_train as run_ttt_nn

sys.path.insert(0, str(ROOT / "benchmarks"))
import run as bench  # noqa: E402
from sections import flops, protocol, speedups  # noqa: E402


@pytest.fixture
def lm(tmp_path):
    return load_language_model("tiny-llama", tmp_path, device="cpu")


def test_step_flops_counts_the_output_projection_once_per_use(lm):
    cfg = lm.model.config
    params = sum(p.numel() for p in lm.model.parameters())
    embedding = lm.model.get_input_embeddings().weight.numel()
    tied = lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight
    head = cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * 10 * 10 * cfg.num_attention_heads * head
    expected = 6 * 10 * (params - embedding + (embedding if tied else 0)) + attention
    assert flops.step_flops(lm.model, 10) == expected


def test_the_reference_protocol_scores_what_ours_scores_at_every_shared_k(lm):
    """Re-scoring after every neighbour from a deep copy must give the same bits per byte as scoring at the grid
    with in-place restore; otherwise the speed-up would compare different computations."""
    text = "the cat sat on the mat. " * 4
    document = {"id": "d", "domain": "prose", "pile_set_name": "pile-cc", "text": text}
    neighbors = [Neighbor(i, f"n{i}", "prose", 0.1 * i, f"neighbour {i}: the dog sat. " * 2) for i in range(4)]
    config = StudyConfig(k=4, learning_rate=1e-3, max_length=128, eval_ks=(0, 1, 3))
    ours = run_ttt_nn(lm, document, neighbors, config)
    reference = protocol.reference_protocol(lm, document, neighbors, config)
    assert len(reference["evals"]) == 5
    for e in ours["evals"]:
        assert reference["evals"][e["k"]] == pytest.approx(e["loglik"], rel=1e-6), e["k"]


def test_the_report_names_every_section_and_the_unmeasured_ones():
    text = bench.render({"embed": {"result": {"rows": [{"a": 1.5}], "goal": "g"}, "machine": {"cores": 2},
                                   "date": "2026-11-27", "command": "python benchmarks/run.py --only embed"}})
    assert "## embed" in text and "| a |" in text and "python benchmarks/run.py --only embed" in text
    assert all(f"## {name}" in text for name in bench.SECTIONS)
    assert "Not measured yet: `python benchmarks/run.py --only flops`" in text


def test_the_code_before_the_speed_changes_gives_exactly_the_same_rows(lm, monkeypatch):
    """The speedups section compares against an emulation of the code before; both must compute the same
    numbers bit for bit (two documents sharing one optimizer, as a run does)."""
    from ttt_core import ttt

    config = StudyConfig(k=3, learning_rate=1e-3, max_length=128, eval_ks=(0, 1, 3))
    docs = [{"id": f"d{i}", "domain": "prose", "pile_set_name": "pile-cc", "text": f"{i} the cat sat on the mat. " * 4}
            for i in range(2)]
    neighbors = [Neighbor(i, f"n{i}", "prose", 0.1 * i, f"neighbour {i}: the dog sat. " * 2) for i in range(3)]

    def run():
        optimizer = ttt.make_optimizer(lm.model, config)
        return [run_ttt_nn(lm, doc, neighbors, config, optimizer) for doc in docs]
    after = run()
    for name in ("apply_gradient", "reset_optimizer", "heap_allocation"):
        monkeypatch.setattr(ttt, name, getattr(ttt, name))  # undone after the test
    original = ttt.reset_optimizer
    speedups.emulate_before()
    assert ttt.reset_optimizer is not original
    before = run()
    for a, b in zip(after, before):
        assert a["evals"] == b["evals"] and a["train_loss"] == b["train_loss"]


def test_a_list_of_records_in_a_result_renders_as_its_own_table():
    text = bench.render({"protocol": {"result": {"rows": [{"a": 1}], "modelled by document size":
                                                 [{"bytes": 1000, "modelled speed-up": 1.25}], "speed-up": 1.2},
                                      "machine": {}, "date": "d", "command": "c"}})
    assert "Modelled by document size:" in text and "| bytes | modelled speed-up |" in text and "| 1000 | 1.25 |" in text


def test_a_single_record_in_a_result_renders_as_a_table_not_as_json():
    text = bench.render({"overheads": {"result": {"rows": [{"a": 1}], "mean": {"total s": 146.2, "restore %": 0.27},
                                                  "k": 50}, "machine": {}, "date": "d", "command": "c"}})
    assert "Mean:" in text and "| total s | restore % |" in text and "| 146 | 0.27 |" in text
    assert "{" not in text.split("## overheads")[1] and "| k |\n|---|\n| 50 |" in text
