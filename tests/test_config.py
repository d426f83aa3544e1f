import pytest

from ttt_core.config import DEVIATIONS, StudyConfig


def test_defaults_validate_and_grid_is_cut_at_k():
    config = StudyConfig(k=10).validate()
    assert config.ks == (0, 1, 2, 3, 5, 10)
    assert StudyConfig(k=7).ks == (0, 1, 2, 3, 5, 7)
    assert StudyConfig(k=0).ks == (0,)


@pytest.mark.parametrize("name, value, valid", [
    ("k", -1, "integer >= 0"),
    ("docs_per_domain", 0, "integer >= 1"),
    ("learning_rate", 0.0, "positive"),
    ("max_length", 1, "integer >= 2"),
    ("chunk_bytes", 10, "integer >= 64"),
    ("test_fraction", 1.0, "between 0 and 1"),
    ("device", "tpu", "'auto', 'cpu'"),
    ("max_eval_tokens", 0, "positive integer"),
    ("score_prefix", "", "'lm-eval', 'endoftext'"),
    ("train_with_bos", "yes", "True (BOS before each training chunk"),
    ("reset_optimizer", 1, "True (fresh AdamW"),
])
def test_bad_values_name_the_parameter_and_what_is_valid(name, value, valid):
    with pytest.raises(ValueError) as err:
        StudyConfig.from_params(**{name: value}).validate()
    assert f"invalid {name}=" in str(err.value) and valid in str(err.value)


def test_unknown_parameter_is_an_error():
    with pytest.raises(ValueError, match="unknown parameter.*'kk'"):
        StudyConfig.from_params(kk=3)


def test_from_params_turns_strings_and_lists_into_tuples():
    config = StudyConfig.from_params(domains="a,b", eval_ks=[0, 2])
    assert config.domains == ("a", "b") and config.eval_ks == (0, 2)
    assert StudyConfig.from_params(domains="").domains == ()


def test_from_namespace_takes_the_fields_of_a_notebook_namespace():
    config = StudyConfig.from_namespace({"k": 3, "model": "tiny-llama", "pd": object(), "__name__": "x"})
    assert config.k == 3 and config.model == "tiny-llama"


def test_run_key_changes_with_results_but_not_with_scale():
    base = StudyConfig()
    assert base.run_key("fp") == StudyConfig(docs_per_domain=9, work_dir="elsewhere").run_key("fp")
    assert base.run_key("fp") != StudyConfig(learning_rate=1e-5).run_key("fp")
    assert base.run_key("fp") != base.run_key("other corpus")
    assert base.run_key("fp") != StudyConfig(k=11).run_key("fp")


def test_every_deviation_is_a_parameter_with_a_paper_value():
    config = StudyConfig()
    rows = config.deviations()
    assert [r["parameter"] for r in rows] == [d.parameter for d in DEVIATIONS]
    assert all(hasattr(config, r["parameter"]) for r in rows)


def test_parameter_files_name_only_known_parameters():
    """`make` prepares from params/*.yml: experiment parameters of a notebook pass, a typo is an error."""
    import yaml

    from conftest import ROOT
    from ttt_core.__main__ import study_parameters

    for path in (ROOT / "params").glob("*.yml"):
        StudyConfig.from_params(**study_parameters(yaml.safe_load(path.read_text()))).validate()
    assert study_parameters({"k": 5, "leakage_k": 5}) == {"k": 5}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['leakage_kk'\]"):
        study_parameters({"leakage_kk": 5})


def test_with_carried_adam_moments_the_sampled_documents_are_part_of_the_run_key():
    fresh = [StudyConfig(docs_per_domain=n).run_key("fp") for n in (1, 2)]
    carried = [StudyConfig(docs_per_domain=n, reset_optimizer=False).run_key("fp") for n in (1, 2)]
    assert fresh[0] == fresh[1] and carried[0] != carried[1]


def test_an_option_added_later_leaves_existing_run_keys_alone_at_its_default(monkeypatch):
    """9b3a6668c2cbcd4f is the default run key before the `optimizer` option existed (METHOD_VERSION 3): finished
    results stay valid; a non-default optimizer is a different run; a bad value is refused by name."""
    import ttt_core.config as config_module

    with monkeypatch.context() as patched:  # the configuration part of the key, as METHOD_VERSION 3 computed it
        patched.setattr(config_module, "METHOD_VERSION", 3)
        assert StudyConfig().run_key("fp") == "9b3a6668c2cbcd4f"
    assert "optimizer" not in StudyConfig().result_inputs("fp")
    assert StudyConfig(optimizer="adafactor").run_key("fp") != StudyConfig().run_key("fp")
    with pytest.raises(ValueError, match="invalid optimizer='sgd'"):
        StudyConfig(optimizer="sgd").validate()


def test_every_key_neutral_default_is_the_dataclass_default():
    """A field is left out of the run key only at the value it had before it existed: if KEY_NEUTRAL_DEFAULTS names
    another value than the dataclass default, every default run would be keyed as if it were that old behaviour."""
    import dataclasses

    from ttt_core.config import KEY_NEUTRAL_DEFAULTS

    defaults = {f.name: f.default for f in dataclasses.fields(StudyConfig)}
    wrong = {name: (value, defaults.get(name, "no such field")) for name, value in KEY_NEUTRAL_DEFAULTS.items()
             if name not in defaults or defaults[name] != value or type(defaults[name]) is not type(value)}
    assert not wrong, f"KEY_NEUTRAL_DEFAULTS (value, dataclass default) that differ: {wrong}"


def test_the_code_version_is_part_of_the_run_key(monkeypatch):
    import ttt_core.config as config_module

    before = StudyConfig().run_key("fp")
    monkeypatch.setattr(config_module, "METHOD_VERSION", config_module.METHOD_VERSION + 1)
    assert StudyConfig().run_key("fp") != before
