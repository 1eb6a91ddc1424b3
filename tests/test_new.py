import json

import nbformat
import pytest
from run_support import notebook_outputs

from kit.errors import ConfigError, KitError
from kit.scaffold import new_competition


def test_new_renders_every_template(tmp_path):
    competition = new_competition("my-comp", tmp_path, example="digits")
    root = tmp_path / "my-comp"
    assert competition.root == root.resolve()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        ".gitignore",
        "README.md",
        "kit.toml",
        "notebooks/eda.ipynb",
    ]
    assert competition.config.competition.name == "my-comp"
    assert competition.config.competition.source == "example:digits"
    readme = (root / "README.md").read_text()
    for question in ("What is the problem?", "What is the input?", "What is the output?",
                     "Where and how will the solution be used?"):  # fmt: skip
        assert question in readme
    assert "Data description" in readme
    nbformat.validate(nbformat.read(root / "notebooks" / "eda.ipynb", as_version=4))
    ignored = (root / ".gitignore").read_text().split()
    assert {"data/", "runs/", "submissions/"} <= set(ignored)
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


def test_new_refuses_an_existing_folder_and_bad_names(tmp_path):
    new_competition("one", tmp_path)
    (tmp_path / "one" / "kit.toml").write_text("# mine\n")
    with pytest.raises(KitError, match="already exists"):
        new_competition("one", tmp_path)
    assert (tmp_path / "one" / "kit.toml").read_text() == "# mine\n"
    for bad in ("Bad Name", "../up", "", "a/b", "-x"):
        with pytest.raises(ConfigError, match="not a slug"):
            new_competition(bad, tmp_path)
    with pytest.raises(ConfigError, match="--example"):
        new_competition("two", tmp_path, example="mnist")


@pytest.mark.slow
def test_eda_notebook_runs_top_to_bottom(digits):
    outputs = notebook_outputs(digits.root / "notebooks" / "eda.ipynb", timeout=120)
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("text", "") for o in outputs])
    assert "120 training images, 30 test images, 10 classes" in text
