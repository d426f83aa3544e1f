import ast
import dataclasses
import re

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
    ("train_with_bos", "yes", "True or False"),  # refused by its type, before validate()
    ("reset_optimizer", 1, "True or False"),
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
    from ttt_core.params import study_parameters

    for path in (ROOT / "params").glob("*.yml"):
        StudyConfig.from_params(**study_parameters(yaml.safe_load(path.read_text()))).validate()
    assert study_parameters({"k": 5, "leakage_k": 5}) == {"k": 5}
    with pytest.raises(ValueError, match=r"unknown parameter 'leakage_kk'.*did you mean 'leakage_k'"):
        study_parameters({"leakage_kk": 5})


def test_with_carried_adam_moments_the_sampled_documents_are_part_of_the_run_key():
    fresh = [StudyConfig(docs_per_domain=n).run_key("fp") for n in (1, 2)]
    carried = [StudyConfig(docs_per_domain=n, reset_optimizer=False).run_key("fp") for n in (1, 2)]
    assert fresh[0] == fresh[1] and carried[0] != carried[1]


def test_an_option_added_later_leaves_existing_run_keys_alone_at_its_default():
    """47d376041e0b50c0 is the configuration part of the default run key at METHOD_VERSION 4 (domain_bytes and
    embed_max_tokens None; since issue 22 the large mini-Pile and minilm-static, 3568b4ce6d78244a before): an
    option added later, left at its default, must not change it, or every finished
    result is orphaned; a non-default optimizer is a different run; a bad value is refused by name."""
    assert StudyConfig().run_key("fp") == "47d376041e0b50c0"
    assert "optimizer" not in StudyConfig().result_inputs("fp")
    assert StudyConfig(optimizer="adafactor").run_key("fp") != StudyConfig().run_key("fp")
    with pytest.raises(ValueError, match="invalid optimizer='sgd'"):
        StudyConfig(optimizer="sgd").validate()


# Parameter types: every field's type is checked in from_params, before validate() and before any work.
@pytest.mark.parametrize("name, value, valid", [
    ("device", 0, "a string"),
    ("model", 1, "a string"),
    ("k", "ten", "an integer"),
    ("k", True, "an integer"),
    ("k", 2.5, "an integer"),
    ("learning_rate", "fast", "a float"),
    ("learning_rate", True, "a float"),
    ("reset_optimizer", 1, "True or False"),
    ("train_with_bos", "yes", "True or False"),
    ("max_eval_tokens", "none please", "None or an integer"),
    ("eval_ks", "0,x", "integers"),
    ("domains", None, "a string"),
    ("k", None, "an integer"),
    ("extra", [], "a mapping"),
])
def test_every_parameter_type_is_checked_before_any_work(name, value, valid, monkeypatch):
    monkeypatch.setattr(StudyConfig, "validate", lambda self: pytest.fail("validate() saw a wrong type"))
    with pytest.raises(ValueError) as err:
        StudyConfig.from_params(**{name: value})
    message = str(err.value)
    assert f"invalid {name}={value!r}" in message and valid in message and "\n" not in message


@pytest.mark.parametrize("name, value, expected, said", [
    ("learning_rate", "2e-5", 2e-5, "learning_rate='2e-5'"),  # PyYAML 1.1 reads 2e-5 (no dot) as a string
    ("domain_bytes", "2.5e5", 250000, "domain_bytes='2.5e5'"),
    ("k", "10", 10, "k='10'"),
    ("k", 10.0, 10, "k=10.0"),
    ("decontam_threshold", "1e-1", 0.1, "decontam_threshold='1e-1'"),
    ("domains", 2023, ("2023",), "domains=2023"),
    ("domains", ["code", 7], ("code", "7"), "domains=['code', 7]"),
    ("eval_ks", "0,1,2", (0, 1, 2), None),
    ("eval_ks", ["0", 1], (0, 1), "eval_ks=['0', 1]"),
    ("train_with_bos", "false", False, "train_with_bos='false'"),
    ("grad_clip", 1, 1.0, None),  # an int is a float: nothing to say
    ("max_eval_tokens", None, None, None),
    ("domains", "a,b", ("a", "b"), None),
])
def test_a_clearly_meant_value_is_converted_and_the_conversion_is_said(name, value, expected, said, recwarn):
    config = StudyConfig.from_params(**{name: value})
    assert getattr(config, name) == expected and type(getattr(config, name)) is type(expected)
    notes = [str(w.message) for w in recwarn]
    assert (any(said in n and name in n for n in notes) if said else not notes), notes


def test_every_field_has_a_type_rule_and_its_default_passes_unchanged(recwarn):
    from ttt_core.checks import check_types

    defaults = StudyConfig().as_dict()
    assert check_types(defaults, StudyConfig) == defaults and not recwarn.list


def test_a_parameter_file_is_type_checked_in_prepare(tmp_path):
    """`python -m ttt_core prepare -f` reads YAML 1.1: 2e-5 is a string there; device: 0 is an int."""
    from ttt_core.__main__ import main
    from ttt_core.params import study_parameters

    assert StudyConfig.from_params(**study_parameters(yaml_load("learning_rate: 2e-5"))).learning_rate == 2e-5
    path = tmp_path / "p.yml"
    path.write_text("device: 0\nk: 3\n")
    with pytest.raises(ValueError, match=r"invalid device=0: expected a string"):
        main(["prepare", "-f", str(path)])


def yaml_load(text):
    import yaml

    return yaml.safe_load(text)


# A misspelt parameter is an error that suggests the nearest name, wherever parameters come in.
def test_a_misspelt_parameter_is_an_error_that_suggests_the_nearest_one():
    from ttt_core.params import study_parameters

    with pytest.raises(ValueError, match=r"unknown parameter 'neighbours'.*did you mean 'neighbors'\?"):
        StudyConfig.from_params(neighbours="random-domain")
    with pytest.raises(ValueError, match=r"unknown parameter 'neighbours'.*did you mean 'neighbors'\?"):
        study_parameters({"neighbours": "random-domain"})
    with pytest.raises(ValueError, match=r"unknown parameter 'control_docs_per_domian'.*did you mean "
                                         r"'control_docs_per_domain'\?"):
        study_parameters({"control_docs_per_domian": 2})


def test_a_notebook_refuses_an_injected_name_it_does_not_declare():
    """The namespace a notebook sees after papermill injected its parameters: declared names, IPython's own
    names and imports pass; a name declared by another notebook (params/study.yml goes to every notebook) passes;
    a name no notebook declares is refused with the nearest declared name."""
    import types

    from ttt_core.params import notebook_config

    base = {"__name__": "__main__", "_i1": "k = 10", "In": ["", "k = 10"], "Out": {}, "get_ipython": print,
            "exit": object(), "pd": types.ModuleType("pandas"), "StudyConfig": StudyConfig,
            "k": 3, "model": "tiny-llama", "params_file": "", "control_docs_per_domain": 1}
    config = notebook_config(dict(base), "02_ttt")
    assert config.k == 3 and config.model == "tiny-llama"
    with pytest.raises(ValueError, match=r"unknown parameter 'neighbours'.*did you mean 'neighbors'\?"):
        notebook_config({**base, "neighbours": "random-domain"}, "02_ttt")
    with pytest.raises(ValueError, match=r"unknown parameter 'spilt_seed'.*did you mean 'split_seed'\?"):
        notebook_config({**base, "spilt_seed": 3}, "03_neighbors")
    with pytest.raises(ValueError, match=r"invalid device=0"):
        notebook_config({**base, "device": 0}, "02_ttt")


@pytest.mark.parametrize("name", sorted(p.stem for p in (__import__("conftest").ROOT / "notebooks").glob("*.py")))
def test_every_notebook_declares_only_its_own_parameters(name):
    """The shared parameters' defaults live in StudyConfig alone: a parameters cell that declared `k = 10` too
    would be a second definition that can drift (the notebook would then run its own default, not the class's)."""
    from conftest import ROOT
    from ttt_core.params import declared_parameters, study_fields

    text = (ROOT / "notebooks" / f"{name}.py").read_text()
    declared = set(declared_parameters(name))
    assert not declared & study_fields(), f"{name} declares shared parameters: {declared & study_fields()}"
    assert "params_file" in declared
    assert f'notebook_config(globals(), "{name}")' in text
    # papermill skips a line it cannot parse (a help comment with '='): then it warns for a declared name
    cell = re.search(r'# %% tags=\["parameters"[^\]]*\]\n(.*?)(?=\n# %%)', text, re.S).group(1)
    assigned = {node.targets[0].id for node in ast.parse(cell).body if isinstance(node, ast.Assign)}
    assert assigned == declared, assigned ^ declared


def test_the_parameters_page_is_generated_from_the_dataclass():
    """book/parameters.md is `params.parameters_page()`: one row per field, each with a default and a help text."""
    from conftest import ROOT
    from ttt_core.params import parameter_reference, parameters_page, study_fields

    assert (ROOT / "book" / "parameters.md").read_text() == parameters_page(), \
        "run `python -m ttt_core parameters-page`"
    rows = parameter_reference()
    assert {name for _, name, _, _ in rows} == study_fields()
    assert all(help_text for _, _, _, help_text in rows), [name for _, name, _, h in rows if not h]
    assert dict((name, default) for _, name, default, _ in rows)["k"] == repr(StudyConfig().k)


def test_a_shared_parameter_is_accepted_by_every_notebook_and_a_typo_refused():
    from ttt_core.params import notebook_config

    assert notebook_config({"k": 3, "model": "tiny-llama", "params_file": ""}, "08_in_context").k == 3
    with pytest.raises(ValueError, match=r"unknown parameter 'lerning_rate'.*did you mean 'learning_rate'\?"):
        notebook_config({"lerning_rate": 1e-4}, "02_ttt")


def test_run_checks_parameters_before_any_kernel_starts(monkeypatch, tmp_path):
    """`python -m ttt_core run` refuses a misspelt name, a bad value and a .py before papermill is called."""
    import papermill

    from conftest import ROOT
    from ttt_core.notebook import run_notebook

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    notebook = ROOT / "notebooks" / "02_ttt.ipynb"
    with pytest.raises(ValueError, match=r"unknown parameter 'kk'.*did you mean 'k'\?"):
        run_notebook(notebook, tmp_path / "out.ipynb", overrides=[("kk", "5")])
    with pytest.raises(ValueError, match=r"invalid k=-1"):
        run_notebook(notebook, tmp_path / "out.ipynb", overrides=[("k", "-1")])
    with pytest.raises(ValueError, match=r"papermill runs the .ipynb"):
        run_notebook(notebook.with_suffix(".py"), tmp_path / "out.ipynb")


def test_papermill_warnings_for_shared_parameters_are_dropped_and_others_kept():
    import logging

    from ttt_core.notebook import _SharedParameterFilter

    keep = _SharedParameterFilter({"k", "control_k"})
    record = lambda message: logging.LogRecord("papermill", logging.WARNING, "", 0, message, None, None)
    assert not keep.filter(record("Passed unknown parameter: k"))
    assert keep.filter(record("Passed unknown parameter: kk"))
    assert keep.filter(record("Executing notebook"))


def test_a_relative_work_dir_is_taken_from_the_repository_not_the_current_directory(monkeypatch, tmp_path):
    from conftest import ROOT

    monkeypatch.chdir(tmp_path)
    assert StudyConfig(work_dir="artifacts").work_path == ROOT / "artifacts"
    assert StudyConfig(work_dir=str(tmp_path / "w")).work_path == tmp_path / "w"


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


def test_a_parameter_file_that_is_not_a_mapping_is_named(tmp_path, capsys):
    from ttt_core.__main__ import main

    path = tmp_path / "list.yml"
    path.write_text("- k: 5\n")
    with pytest.raises(SystemExit):
        main(["prepare", "-f", str(path)])
    assert "list.yml: a parameter file is a YAML mapping of name: value lines, not a list" in capsys.readouterr().err


def test_a_kernel_that_ran_the_notebook_before_is_not_taken_for_injected_names():
    """Jupyter's "Run All" a second time: the last run's globals (rows, table, ...) are the notebook's own names,
    not parameters; an injected misspelling is still refused."""
    from ttt_core.params import assigned_names, notebook_config

    assert {"rows", "table", "study"} <= assigned_names("02_ttt")
    history = [""] * 40  # IPython's `In`: this kernel has run more cells than lead to notebook_config
    leftovers = {"k": 3, "model": "tiny-llama", "rows": [{"doc_id": "a"}], "table": {}, "first_k": 1, "In": history}
    assert notebook_config(dict(leftovers), "02_ttt").k == 3
    with pytest.raises(ValueError, match=r"unknown parameter 'neighbours'"):
        notebook_config({**leftovers, "neighbours": "random-domain"}, "02_ttt")


def test_a_name_the_notebook_binds_later_is_refused_in_a_fresh_kernel():
    """papermill's kernel is fresh: `-p kk 2` (02 binds `kk` in a loop) or `-p rows 1` is a misspelling there, not a
    left-over, so it is refused with the nearest valid name."""
    from ttt_core.params import assigned_names, notebook_config

    assert {"kk", "rows"} <= assigned_names("02_ttt")
    fresh = {"k": 3, "model": "tiny-llama", "In": ["", "params", "injected", "config"]}
    with pytest.raises(ValueError, match=r"unknown parameter 'kk'.*'k'"):
        notebook_config({**fresh, "kk": 2}, "02_ttt")
    with pytest.raises(ValueError, match=r"unknown parameter 'rows'"):
        notebook_config({**fresh, "rows": 1}, "02_ttt")


def test_a_parameter_file_of_fields_alone_needs_no_notebook(monkeypatch):
    """`ray-run -f params/paper-gpt2.yml` on a node with only the scale extra (no papermill): the notebooks are
    read only for names that are no StudyConfig field."""
    import ttt_core.params as params

    monkeypatch.setattr(params, "notebook_parameters", lambda folder: pytest.fail("read the notebooks"))
    assert params.study_parameters({"k": 5, "model": "gpt2"}) == {"k": 5, "model": "gpt2"}


@pytest.mark.parametrize("name", sorted(p.stem for p in (__import__("conftest").ROOT / "notebooks").glob("*.py")))
def test_no_notebook_binds_a_shared_parameter_at_module_level(name):
    """A shared parameter is read from `config`, never rebound: `for model in models:` left a global `model`
    behind, which a second "Run All" in the same kernel would have taken for the parameter."""
    import nbformat

    from conftest import ROOT
    from ttt_core.params import study_fields

    fields, bound = study_fields(), []

    class Bindings(ast.NodeVisitor):  # module-level names only: functions and comprehensions have their own scope
        def visit_FunctionDef(self, node):
            pass

        visit_AsyncFunctionDef = visit_Lambda = visit_ListComp = visit_SetComp = visit_DictComp = visit_FunctionDef
        visit_GeneratorExp = visit_FunctionDef

        def visit_Name(self, node):
            if isinstance(node.ctx, ast.Store) and node.id in fields:
                bound.append(node.id)

    for cell in nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells:
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            Bindings().visit(ast.parse(cell.source))
    assert not bound, f"{name} binds shared parameters at module level: {bound}"


def test_command_line_refusals_are_messages_not_tracebacks(tmp_path, capsys):
    """A missing parameter file, a misspelt name for `run`, `mark-for-book` without notebooks and `results-figure` on
    a folder without executed chapters: argparse's message (exit 2), before any kernel or model."""
    from ttt_core.__main__ import main

    for argv, said in [(["run", "notebooks/02_ttt.ipynb", "-f", str(tmp_path / "none.yml")], "no such parameter file"),
                       (["run", "notebooks/02_ttt.ipynb", "-p", "kk", "2"], "unknown parameter 'kk'"),
                       (["prepare", "-f", str(tmp_path / "none.yml")], "no such parameter file"),
                       (["mark-for-book"], "mark-for-book needs executed notebooks"),
                       (["results-figure", str(tmp_path)], "no executed chapters")]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert said in capsys.readouterr().err, argv


def test_prepare_reads_p_after_f(tmp_path, monkeypatch):
    """`prepare -f study.yml -p k 3` is not silently the file's k: -p is read as `run` reads it, names checked."""
    import ttt_core.__main__ as cli

    path = tmp_path / "p.yml"
    path.write_text("k: 5\n")
    seen = {}
    monkeypatch.setattr(cli, "prepare", lambda config: seen.setdefault("k", config.k) and pytest.skip("stopped"))
    with pytest.raises(BaseException):
        cli.main(["prepare", "-f", str(path), "-p", "k", "3"])
    assert seen["k"] == 3
    with pytest.raises(ValueError, match="unknown parameter 'kk'"):
        cli.main(["prepare", "-f", str(path), "-p", "kk", "3"])
