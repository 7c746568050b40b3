"""Configuration: presets, layering (preset -> --config -> --set) and validation messages."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learner.config import LearnerConfig, TrainSpec
from replay_data.presets import PhaseCounts, default_phases, load_preset, preset_names
from replay_data.typed_config import ConfigError, build, to_dict
from simulator.config import RunConfig, dump, resolve

# docs/architecture.md, "Periods, phases and presets": T and (pretrain, online, validation, test)
PRESET_TABLE = {
    "yelp": (40, (10, 20, 3, 7)),
    "synthetic-business": (40, (10, 20, 3, 7)),
    "movielens": (40, (10, 20, 3, 7)),
    "adressa": (63, (21, 27, 5, 10)),
    "synthetic-news": (63, (21, 27, 5, 10)),
    "demo": (16, (4, 6, 2, 4)),
    "tiny": (8, (2, 3, 1, 2)),
}


def test_every_preset_resolves_with_the_designed_periods_and_phases():
    assert preset_names() == sorted(PRESET_TABLE)
    for name, (periods, phases) in PRESET_TABLE.items():
        cfg = resolve(name)
        assert cfg.preset == name
        assert cfg.description == load_preset(name)["description"] != ""
        assert cfg.data.periods == periods, name
        assert cfg.data.phases == PhaseCounts(*phases), name
        # the resolved config survives the round trip through config.yaml
        assert build(RunConfig, yaml.safe_load(dump(cfg))) == cfg


def test_preset_specific_learner_settings():
    tiny = resolve("tiny").learner
    assert tiny.model.dim == 8 and tiny.strategies.sml.rounds == 2
    adressa = resolve("adressa").learner.strategies
    assert (adressa.sml.rounds, adressa.sml.step1.epochs, adressa.sml.step2.epochs) == (7, 2, 2)
    # a partial section in a preset keeps the defaults it does not name
    assert adressa.sml.step1 == TrainSpec(lr=1e-2, batch=1024, epochs=2, l2=1e-6)
    assert adressa.sml.step2 == TrainSpec(lr=1e-3, batch=256, epochs=2, l2=1e-4)
    assert resolve("tiny").learner.strategies.spmf.train == TrainSpec(lr=1e-2, batch=64, epochs=4, l2=0.0)
    assert resolve("yelp").data.preprocess == {"dedup_exact": True, "repeat_policy": {"keep": "first"}}


def test_default_phases_for_other_period_counts():
    assert default_phases(40) == PhaseCounts(10, 20, 3, 7)
    assert default_phases(12) == PhaseCounts(3, 6, 1, 2)
    assert default_phases(3) == PhaseCounts(1, 1, 0, 1)
    for n in range(3, 100):
        assert default_phases(n).total == n
    with pytest.raises(ConfigError, match="at least 3 periods"):
        default_phases(2)


def test_partial_override_keeps_sibling_defaults():
    cfg = resolve("movielens", overrides=["learner.pretrain.epochs=3"])
    assert cfg.learner.pretrain == TrainSpec(lr=1e-2, batch=1024, epochs=3, l2=1e-5)
    cfg = resolve("tiny", overrides=["learner.strategies.full_retrain.train.batch=32"])
    assert cfg.learner.strategies.full_retrain.train == TrainSpec(lr=1e-2, batch=32, epochs=4, l2=1e-7)
    assert resolve("demo").learner.pretrain == LearnerConfig().pretrain


def test_layers_apply_in_order_preset_then_file_then_set(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text("preset: tiny\nlearner:\n  seed: 5\n  pretrain: {lr: 0.05}\n  model: {dim: 16}\n")
    cfg = resolve(config_file=file, overrides=["learner.model.dim=4", "data.input=x.csv"])
    assert cfg.preset == "tiny" and cfg.data.periods == 8  # the file names its preset
    assert cfg.learner.seed == 5
    assert cfg.learner.pretrain == TrainSpec(lr=0.05, batch=1024, epochs=10, l2=1e-5)  # tiny's epochs kept
    assert cfg.learner.model.dim == 4  # --set wins over the file
    assert cfg.data.input == "x.csv"
    # an explicit preset wins over the file's
    assert resolve("movielens", config_file=file).preset == "movielens"
    assert resolve().preset == "demo"


def test_unknown_key_names_the_full_path_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        resolve("tiny", overrides=["learner.pretrain.epochz=3"])
    assert str(err.value) == "unknown key learner.pretrain.epochz; allowed keys here: batch, epochs, l2, lr"
    with pytest.raises(ConfigError, match=r"unknown key data\.schedul; allowed keys here: .*schedule"):
        resolve("tiny", overrides=["data.schedul.kind=fixed"])


def test_wrong_type_names_path_value_and_expected_type():
    with pytest.raises(ConfigError) as err:
        resolve("tiny", overrides=["learner.pretrain.epochs=lots"])
    assert str(err.value) == "learner.pretrain.epochs: expected int, got str 'lots'"
    with pytest.raises(ConfigError, match=r"learner\.model\.dim: expected int, got the boolean True"):
        resolve("tiny", overrides=["learner.model.dim=true"])
    with pytest.raises(ConfigError, match=r"learner\.device: 'tpu' is not allowed; choose one of 'cpu', 'cuda'"):
        resolve("tiny", overrides=["learner.device=tpu"])
    with pytest.raises(ConfigError, match=r"learner\.eval\.ks\[1\]: expected int, got str 'ten'"):
        resolve("tiny", overrides=["learner.eval.ks=[5, ten]"])
    with pytest.raises(ConfigError, match=r"data\.phases: expected a mapping, got int 3"):
        resolve("tiny", overrides=["data.phases=3"])


@pytest.mark.parametrize("text, value", [("1e38", 1e38), ("1e-3", 1e-3), ("1.0e+38", 1e38), ("+2E2", 200.0)])
def test_a_float_setting_accepts_exponent_notation(text, value):
    # PyYAML reads 1e-3 as text (it wants a dot in the mantissa); a float setting takes it
    assert resolve("tiny", overrides=[f"learner.pretrain.lr={text}"]).learner.pretrain.lr == value


def test_text_that_is_not_a_number_is_still_refused_for_a_float():
    with pytest.raises(ConfigError, match=r"learner\.pretrain\.lr: expected float, got str '1e'"):
        resolve("tiny", overrides=["learner.pretrain.lr=1e"])


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(ConfigError) as err:
        resolve("tiny", overrides=["learner.strategies.enabled=[sml, smll]"])
    message = str(err.value)
    assert "strategies.enabled" in message and "'smll'" in message
    for known in ("full_retrain", "fine_tune", "spmf", "sml", "sml_s"):
        assert known in message


def test_serving_strategy_must_be_enabled():
    with pytest.raises(
        ConfigError,
        match=r"learner\.strategies\.serving: 'sml' is not allowed; serve one of the enabled strategies: fine_tune, spmf",
    ):
        resolve("tiny", overrides=["learner.strategies.enabled=[fine_tune, spmf]"])
    cfg = resolve("tiny", overrides=["learner.strategies.enabled=[fine_tune]", "learner.strategies.serving=fine_tune"])
    assert cfg.learner.strategies.enabled == ["fine_tune"]
    with pytest.raises(ConfigError, match="at least one strategy"):
        resolve("tiny", overrides=["learner.strategies.enabled=[]", "learner.strategies.serving=sml"])


def test_phases_must_add_up_to_periods():
    with pytest.raises(ConfigError, match="phases add up to 40 periods but periods is 41"):
        resolve("movielens", overrides=["data.periods=41"])
    with pytest.raises(ConfigError, match="phases add up to 9 periods but periods is 8"):
        resolve("tiny", overrides=["data.phases.test=3"])
    with pytest.raises(ConfigError, match="pretrain must be >= 1"):
        resolve("tiny", overrides=["data.phases.pretrain=0", "data.phases.online=5"])
    with pytest.raises(ConfigError, match="missing key data.phases.online"):
        resolve("tiny", overrides=["data.phases={pretrain: 8}"])


def test_bad_set_syntax_and_values():
    with pytest.raises(ConfigError, match="--set expects key.path=value"):
        resolve("tiny", overrides=["learner.seed"])
    with pytest.raises(ConfigError, match=r"--set learner\.seed=\[1,: the value is not valid YAML"):
        resolve("tiny", overrides=["learner.seed=[1,"])
    with pytest.raises(ConfigError, match=r"--set learner\.model\.dim\.x: dim is not a section"):
        resolve("tiny", overrides=["learner.model.dim.x=1"])
    with pytest.raises(ConfigError, match=r"unknown preset 'nosuch'; known presets: adressa, demo, movielens"):
        resolve("nosuch")


def test_yaml_syntax_error_in_config_file_names_the_file(tmp_path):
    file = tmp_path / "broken-settings.yaml"
    file.write_text("learner:\n  seed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken-settings\.yaml: not valid YAML"):
        resolve(config_file=file)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping"):
        resolve(config_file=listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert resolve(config_file=empty) == resolve("demo")


# -- hypothesis: whatever the dict, build() raises ConfigError or returns a valid config ----------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["sml", "sml_s", "fine_tune", "cpu", "cuda", "reseed", "1e-3", ""])
)
_keys = st.text(max_size=6) | st.integers() | st.booleans() | st.none()
junk = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3), max_leaves=10
)


def _for_hint(hint: Any) -> st.SearchStrategy:
    """Values of roughly the right shape for `hint` (so deep fields get reached), or junk."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        shaped = _for_dataclass(hint)
    elif origin in (typing.Union, types.UnionType):
        shaped = st.one_of([_for_hint(arg) for arg in typing.get_args(hint)])
    elif origin is Literal:
        shaped = st.sampled_from(typing.get_args(hint))
    elif origin in (list, tuple):
        shaped = st.lists(_for_hint(typing.get_args(hint)[0]), max_size=4)
    elif hint is type(None):
        shaped = st.none()
    elif hint is int:
        shaped = st.integers(-2, 70)
    elif hint is float:
        shaped = st.floats(-1, 1) | st.integers(-2, 3)
    elif hint is bool:
        shaped = st.booleans()
    else:
        shaped = junk
    return shaped | junk


def _for_dataclass(cls) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = st.fixed_dictionaries({}, optional={f.name: _for_hint(hints[f.name]) for f in dataclasses.fields(cls)})
    extra = st.dictionaries(_keys, junk, max_size=1)
    return st.one_of(fields, st.tuples(fields, extra).map(lambda pair: {**pair[0], **pair[1]}))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_for_dataclass(RunConfig) | junk)
def test_build_raises_only_config_errors(data):
    try:
        cfg = build(RunConfig, data)
    except ConfigError as err:
        assert str(err)
        return
    # what builds is a valid config that round-trips through its plain form
    assert repr(build(RunConfig, to_dict(cfg))) == repr(cfg)


# Issue #16, "Why": each was accepted (or failed later, naming no key). Each must be refused
# before anything runs, in one line that names the key, the value and what is allowed.
REFUSED = [
    ("tiny", ["learner.model.dim=-4"], "learner.model.dim: -4 is not allowed; the embedding dimension must be >= 1"),
    ("tiny", ["learner.eval.negatives=-1"], "learner.eval.negatives: -1 is not allowed; negatives must be >= 1"),
    (
        "tiny",
        ["learner.strategies.spmf.reservoir=-10"],
        "learner.strategies.spmf.reservoir: -10 is not allowed; the reservoir holds >= 0 interactions",
    ),
    (
        "tiny",
        ["serve.metrics_port=99999"],
        "serve.metrics_port: 99999 is not allowed; a port is 0 (a free one) to 65535",
    ),
    ("tiny", ["bus.url=kafak://x"], "bus.url: 'kafak://x' is not allowed; use memory or kafka://HOST:PORT"),
    ("tiny", ["learner.eval.ks=[]"], "learner.eval.ks: [] is not allowed; give at least one cut-off K"),
    (
        "tiny",
        ["learner.strategies.enabled=[sml,sml]"],
        "learner.strategies.enabled[1]: 'sml' is not allowed; each strategy may be listed once",
    ),
    (
        "movielens",
        ["data.reader.min_ratng=4"],
        "unknown key data.reader.min_ratng; allowed keys here: chunk_rows, format, max_line_bytes, min_rating "
        "(the movielens reader)",
    ),
    (
        "movielens",
        ["data.dataset=csv"],
        "missing key data.reader.user_col; this section needs user_col, item_col, ts_col (the csv reader)",
    ),
    ("tiny", ["data.reader.min_ratng=4"], "unknown key data.reader.min_ratng; allowed keys here: "),
    ("tiny", ["data.reader.world=nope"], "data.reader.world: 'nope' is not allowed; choose one of "),
    ("movielens", ["data.reader.min_rating=high"], "data.reader.min_rating: expected float, got str 'high'"),
    ("tiny", ["learner.eval.ks=[5,5]"], "learner.eval.ks[1]: 5 is not allowed; each K may be listed once"),
    ("tiny", ["learner.eval.ks=[0]"], "learner.eval.ks[0]: 0 is not allowed; each K must be >= 1"),
    ("tiny", ["learner.eval.chunk_rows=0"], "learner.eval.chunk_rows: 0 is not allowed"),
    ("tiny", ["learner.model.init_std=0"], "learner.model.init_std: 0.0 is not allowed; init_std must be > 0"),
    ("tiny", ["learner.threads=0"], "learner.threads: 0 is not allowed; threads must be >= 1"),
    ("tiny", ["learner.pretrain.batch=0"], "learner.pretrain.batch: 0 is not allowed; batch must be >= 1"),
    ("tiny", ["learner.strategies.sml.rounds=0"], "learner.strategies.sml.rounds: 0 is not allowed"),
    (
        "tiny",
        ["learner.strategies.sml_s.rounds=3"],
        "unknown key learner.strategies.sml_s.rounds; allowed keys here: frozen_step1_epochs "
        "(SML-S reads every other setting from learner.strategies.sml)",
    ),
    (
        "tiny",
        ["learner.strategies.sml.cnn=false"],
        "unknown key learner.strategies.sml.cnn; allowed keys here: chunk_rows, cold_start, rounds, step1, step2, "
        "step2_negatives, threads, w_hat, w_hat_adam (the ablations are strategies now: enable sml_cnn, sml_fc, "
        "sml_n, sml_s or sml_fp beside sml)",
    ),
    (
        "tiny",
        ["learner.strategies.sml_fp.rounds=3"],
        "unknown key learner.strategies.sml_fp.rounds; allowed keys here: none "
        "(SML's ablations read every setting from learner.strategies.sml)",
    ),
    ("tiny", ["learner.strategies.sml.cold_start=mean"], "learner.strategies.sml.cold_start"),
    ("tiny", ["learner.checkpoint.keep=0"], "learner.checkpoint.keep: 0 is not allowed; keep must be >= 1"),
    ("tiny", ["serve.control_port=-1"], "serve.control_port: -1 is not allowed; a port is 0"),
    ("tiny", ["replay.partitions=0"], "replay.partitions: 0 is not allowed; partitions must be >= 1"),
    ("tiny", ["bus.url=kafka://"], "bus.url: 'kafka://' is not allowed"),
    ("tiny", ["data.periods=2", "data.phases=null"], "data.periods: 2 is not allowed; a run needs at least 3 periods"),
    ("movielens", ["data.schedule.kind=weekly"], "data.schedule: unknown schedule kind 'weekly'"),
    ("movielens", ["data.preprocess.kcore.min_item=-1"], "data.preprocess: kcore.min_item must be >= 0, got -1"),
]


@pytest.mark.parametrize("preset, overrides, message", REFUSED, ids=lambda v: v if isinstance(v, str) else None)
def test_every_bad_setting_is_refused_in_one_line_naming_key_value_and_what_is_allowed(preset, overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve(preset, overrides=overrides)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_well_formed_bus_urls_are_accepted():
    for url in ("memory", "kafka://localhost:9092", "kafka://10.0.0.1:9092,10.0.0.2:9093"):
        assert resolve("tiny", overrides=[f"bus.url={url}"]).bus.url == url


def test_a_key_given_twice_is_refused(tmp_path):
    file = tmp_path / "twice.yaml"
    file.write_text("preset: tiny\nlearner:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: not valid YAML at line 4: the key 'seed' is given twice"):
        resolve(config_file=file)
    with pytest.raises(ConfigError, match=r"the key 'sml' is given twice"):
        resolve("tiny", overrides=["learner.strategies={sml: {}, sml: {}}"])


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the config file .*absent\.yaml"):
        resolve(config_file=tmp_path / "absent.yaml")


def test_reader_options_are_checked_per_reader():
    assert resolve("movielens", overrides=["data.reader.min_rating=4"]).data.reader == {"min_rating": 4}
    cfg = resolve("movielens", overrides=["data.dataset=csv", "data.reader={user_col: u, item_col: i, ts_col: t}"])
    assert cfg.data.reader == {"user_col": "u", "item_col": "i", "ts_col": "t"}
    # min_rating is MovieLens's option, not Yelp's
    with pytest.raises(ConfigError, match=r"unknown key data\.reader\.min_rating; .*min_stars.* \(the yelp reader\)"):
        resolve("yelp", overrides=["data.reader.min_rating=4"])
