import pytest

from iptnlp.config import ModelConfig, from_dict, load_model_config, load_preprocess_config, resolve_path
from iptnlp.errors import ConfigError


def test_shipped_configs_load():
    cfg = load_model_config()
    pre = load_preprocess_config(resolve_path(None, cfg.preprocess))
    assert cfg.name == "ipt-area"
    assert "no" in pre.negation.pre_cues   # YAML must not read it as a boolean


def test_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as err:
        from_dict(ModelConfig, {"foo": 1, "vectorizer": {"ngram_range": [1], "bar": 2}, "seed": "x"}, "x.yml")
    message = str(err.value)
    assert message.startswith("x.yml: unknown key 'foo'")
    assert "vectorizer: unknown key 'bar'" in message
    assert "vectorizer.ngram_range: expected 2 items, got 1" in message
    assert "seed: expected int, got 'x'" in message


def test_bad_calibration_method(tmp_path):
    path = tmp_path / "m.yml"
    path.write_text("calibration:\n  method: magic\n")
    with pytest.raises(ConfigError, match="calibration.method must be temperature, sigmoid, isotonic or none"):
        load_model_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_model_config(tmp_path / "nope.yml")
