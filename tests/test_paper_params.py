"""params/paper-*.yml: the paper's setup (ttt_core.paper.PAPER_SETUP, transcribed from PAPER.md sections 1-5)."""
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from ttt_core.__main__ import study_parameters
from ttt_core.config import StudyConfig
from ttt_core.paper import PAPER_MODELS, PAPER_SETUP

PAPER_MD = ROOT.parent / "shared" / "reference" / "PAPER.md"


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_each_paper_parameter_set_is_the_papers_setup(name):
    params = yaml.safe_load((ROOT / "params" / f"{name}.yml").read_text())
    config = StudyConfig.from_params(**study_parameters(params)).validate()
    model, learning_rate, max_length = PAPER_MODELS[name]
    assert (config.model, config.learning_rate, config.max_length) == (model, learning_rate, max_length)
    for field, value in PAPER_SETUP.items():
        assert getattr(config, field) == value, f"{name}: {field}={getattr(config, field)!r}, paper {value!r}"
    assert config.reset_optimizer  # the documented departure (its comment says how to restore the carry)
    assert "reset_optimizer" in (ROOT / "params" / f"{name}.yml").read_text().split("\nmodel:")[0]


@pytest.mark.skipif(not PAPER_MD.exists(), reason="the reference notes are not beside this checkout")
def test_paper_setup_matches_the_reference_notes():
    """A second reading of PAPER.md itself, where it is available (the development machines)."""
    text = PAPER_MD.read_text()
    assert PAPER_SETUP["embedder"] in text and "Random(1216)" in text and "0.2*len" in text
    assert re.search(r"\*\*512 tokens\*\*", text) and re.search(r"k = \*\*50\*\*", text)
    table = re.search(r"\| lr \| (.+?) \|\n\| max_length.*?\| (.+?) \|\n", text)
    rates = [float(x) for x in re.findall(r"[\d.]+e-\d+", table.group(1))]
    lengths = [int(x) for x in re.findall(r"\d{4}", table.group(0).split("\n")[1])]
    assert rates == [v[1] for v in PAPER_MODELS.values()] and lengths == [v[2] for v in PAPER_MODELS.values()]
    assert "weight_decay 0.01" in text and "eps=1e-8" in text and "clip_grad_norm_(…, 1.0)" in text
