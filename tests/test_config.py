import re
import tomllib
from pathlib import Path

import pytest

from kit.config import Config, config_from_dict, dump_toml, load_config, parse_override
from kit.errors import ConfigError
from kit.scaffold import templates_dir

TEMPLATE = templates_dir() / "competition" / "kit.toml.tmpl"


def render_template() -> str:
    text = TEMPLATE.read_text().replace("$name", "x").replace("$source", "example:digits")
    return text.replace("$platform", "local")


def test_template_matches_the_defaults_and_comments_every_field():
    raw = tomllib.loads(render_template())
    config = config_from_dict(raw)
    defaults = Config().to_dict()
    for section, values in config.to_dict().items():
        for key, value in values.items():
            if (section, key) in {("competition", "name"), ("competition", "source")}:
                continue
            assert value == defaults[section][key], f"{section}.{key}"
    # every field of every section is present in the template ...
    assert {s: set(v) for s, v in raw.items()} == {s: set(v) for s, v in defaults.items()}
    # ... and every `key = value` line carries a comment (its unit or reason), on the line or above
    lines = render_template().splitlines()
    uncommented = [
        line
        for previous, line in zip([""] + lines[:-1], lines, strict=True)
        if re.match(r"^\w+ = ", line) and "#" not in line and not previous.startswith("#")
    ]
    assert uncommented == []


def test_unknown_key_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*did you mean 'epochs'"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown section \[trian\].*did you mean 'train'"):
        config_from_dict({"trian": {}})


def test_wrong_type_names_the_field():
    with pytest.raises(ConfigError, match=r"train.epochs must be int, got str"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"train.amp must be bool"):
        config_from_dict({"train": {"amp": 1}})
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0  # ints are fine floats


def test_overrides_are_toml_values_and_bare_words_are_strings(tmp_path: Path):
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("model.name=resnet18") == (["model", "name"], "resnet18")
    assert parse_override('predict.tta=["identity","hflip"]')[1] == ["identity", "hflip"]
    path = tmp_path / "kit.toml"
    path.write_text("[train]\nepochs = 5\n")
    config = load_config(path, ["train.epochs=2", "train.lr=0.1"])
    assert (config.train.epochs, config.train.lr) == (2, 0.1)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("epochs")


def test_dump_round_trips(tmp_path: Path):
    config = Config()
    config.model.name = 'quote"d'
    path = tmp_path / "kit.toml"
    path.write_text(dump_toml(config.to_dict()))
    assert load_config(path).to_dict() == config.to_dict()


def test_missing_and_broken_files_are_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="kit.toml not found"):
        load_config(tmp_path / "kit.toml")
    (tmp_path / "kit.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "kit.toml")
