"""The README's loops run exactly as printed, on a tiny recipe.

Every fenced ```bash block runs line by line from a fresh workspace (the folder that receives
competitions/), in its own shell per block (`cd` lines move that block's shell); every ```python
block runs statement by statement in one namespace, from another fresh workspace. Blocks are
found generically, so sections added later run too. Skipped, with the reason printed:

- a block whose fence carries `[needs: WHAT]` (e.g. ```bash [needs: kaggle]);
- a line whose comment carries `[needs: WHAT]` (e.g. `kit host ...  # serve it [needs: host]`).

The tiny recipe is the environment, not an edit of the commands: right after a competition is
scaffolded its kit.toml is rewritten to TINY_RECIPE, and once its data exists, training reads a
300-image subset of train.csv (data/train_small.csv). Python objects loaded before that are
reloaded, so they see it too.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(?P<lang>\w+)(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
NEEDS = re.compile(r"\[needs: (?P<what>[^\]]+)\]")
SMALL_TRAIN = 300  # training images the tiny recipe keeps
TINY_RECIPE = {  # section -> key -> TOML value
    "train": {"epochs": "1", "batch_size": "32", "num_workers": "0"},
    "predict": {"batch_size": "128"},
    "data": {"train_csv": '"data/train_small.csv"'},
}
TINY_MARK = "# readme test: tiny recipe\n"
LINE_TIMEOUT = 300  # s, one command of the README


def readme_blocks(text: str | None = None) -> list[dict]:
    """Every fenced block: lang, the skip reason of the block (or None), and its body."""
    text = README.read_text() if text is None else text
    blocks = []
    for match in FENCE.finditer(text):
        needs = NEEDS.search(match["info"])
        blocks.append(
            {
                "lang": match["lang"],
                "skip": needs["what"] if needs else None,
                "body": match["body"],
                "line": text[: match.start()].count("\n") + 1,
            }
        )
    return blocks


def shell_lines(body: str) -> list[tuple[str, str | None]]:
    """(command, skip reason or None) per command line of a bash block."""
    lines = []
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        comment = line.split(" #", 1)[1] if " #" in line else ""
        needs = NEEDS.search(comment)
        lines.append((line, needs["what"] if needs else None))
    return lines


def make_tiny(workspace: Path) -> bool:
    """Give every scaffolded competition the tiny recipe (once); True when one was changed now."""
    from kit.config import set_toml_value

    changed = False
    for toml in workspace.glob("competitions/*/kit.toml"):
        text = toml.read_text()
        if not text.startswith(TINY_MARK):
            toml.write_text(TINY_MARK + text)
            for section, values in TINY_RECIPE.items():
                for key, value in values.items():
                    set_toml_value(toml, section, key, value)
            changed = True
        data = toml.parent / "data"
        if (data / "train.csv").exists() and not (data / "train_small.csv").exists():
            table = pd.read_csv(data / "train.csv", dtype=str)
            table.head(SMALL_TRAIN).to_csv(data / "train_small.csv", index=False)
    return changed


def _environment(home: Path) -> dict:
    env = dict(os.environ)
    env.update(KIT_HOME=str(home), KIT_TEAM="readme", OMP_NUM_THREADS="1",
               NO_ALBUMENTATIONS_UPDATE="1")  # fmt: skip
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_blocks_are_found_and_what_is_skipped_says_why():
    blocks = readme_blocks()
    bash = [b for b in blocks if b["lang"] == "bash" and not b["skip"]]
    python = [b for b in blocks if b["lang"] == "python" and not b["skip"]]
    assert bash and python
    assert any("kit new digits --example digits" in b["body"] for b in bash)
    assert {b["skip"] for b in blocks if b["skip"]} >= {"kaggle"}
    fake = (
        "```bash [needs: host]\nkit host\n```\n```bash\nkit a  # x [needs: cluster]\nkit b\n```\n"
    )
    found = readme_blocks(fake)
    assert [b["skip"] for b in found] == ["host", None]
    assert shell_lines(found[1]["body"]) == [("kit a  # x [needs: cluster]", "cluster"),
                                            ("kit b", None)]  # fmt: skip


def test_every_run_in_a_blend_was_predicted_first():
    """The bug the README had: `kit ensemble r1 r2` with no `kit predict r2` before it."""
    for block in readme_blocks():
        if block["lang"] != "bash" or block["skip"]:
            continue
        predicted = set()
        for line, skip in shell_lines(block["body"]):
            words = shlex.split(line, comments=True)
            if skip or words[:1] != ["kit"]:
                continue
            if words[1] == "predict":
                predicted.add(next(w for w in words[2:] if not w.startswith("-")))
            if words[1] in ("ensemble", "pseudo"):
                runs = []
                for word in words[2:]:
                    if word.startswith("-"):
                        break
                    runs.append(word)
                assert set(runs) <= predicted, f"README line {block['line']}: {line}"


def run_line(line: str, cwd: Path, env: dict) -> tuple[int, str]:
    """Run one README line in cwd: a plain `kit ...` line in this process through Click (as
    printed, minus a process start and the imports, which dominate a tiny recipe's time), any
    other line (pipes, variables, other programs) through bash."""
    words = shlex.split(line, comments=True)
    if words[0] == "kit" and not SHELL_SYNTAX.search(line.split(" #", 1)[0]):
        from click.testing import CliRunner

        from kit.cli import cli

        here = Path.cwd()
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            os.chdir(cwd)
            done = CliRunner().invoke(cli, words[1:], prog_name="kit")
        finally:
            os.chdir(here)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        failure = done.exception if not isinstance(done.exception, SystemExit) else None
        return (1 if failure else done.exit_code), done.output + (repr(failure) if failure else "")
    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=LINE_TIMEOUT)  # fmt: skip
    return done.returncode, done.stdout[-3000:] + done.stderr[-3000:]


SHELL_SYNTAX = re.compile(r"[|&;<>$`*?]")  # a line bash must interpret


@pytest.mark.slow
def test_the_cli_blocks_run_as_printed(tmp_path):
    workspace = tmp_path / "cli"
    workspace.mkdir()
    env = _environment(tmp_path / "cli-home")
    ran, skipped, started = [], [], time.perf_counter()
    for block in readme_blocks():
        if block["lang"] != "bash":
            continue
        if block["skip"]:
            skipped.append((block["line"], block["skip"]))
            continue
        cwd = workspace
        for line, skip in shell_lines(block["body"]):
            if skip:
                skipped.append((line, skip))
                continue
            words = shlex.split(line, comments=True)
            if words[0] == "cd":
                cwd = (cwd / os.path.expanduser(words[1])).resolve()
                continue
            began = time.perf_counter()
            code, output = run_line(line, cwd, env)
            print(f"{time.perf_counter() - began:6.1f} s  {line}", flush=True)  # pytest -s shows it
            assert code == 0, f"README: {line}\n{output[-6000:]}"
            ran.append(line)
            make_tiny(workspace)
    print(
        f"ran {len(ran)} README lines in {time.perf_counter() - started:.0f} s; skipped {skipped}"
    )
    digits = workspace / "competitions" / "digits"
    assert (digits / "blends" / "blend" / "card.md").exists()
    assert (digits / "runs" / "index.html").exists() and (
        digits / "submissions" / "r1.csv"
    ).exists()


@pytest.mark.slow
def test_the_python_blocks_run_as_printed(tmp_path, monkeypatch, capsys):
    import kit
    from kit.competition import Competition

    workspace = tmp_path / "python"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("KIT_HOME", str(tmp_path / "python-home"))
    namespace: dict = {"__name__": "readme"}
    executed = 0
    for block in readme_blocks():
        if block["lang"] != "python" or block["skip"]:
            continue
        for statement in ast.parse(block["body"]).body:
            source = ast.get_source_segment(block["body"], statement)
            code = compile(ast.Module([statement], type_ignores=[]), "README.md", "exec")
            try:
                exec(code, namespace)
            except Exception as error:
                raise AssertionError(
                    f"README: {source}\n{type(error).__name__}: {error}"
                ) from error
            executed += 1
            if make_tiny(workspace):  # objects loaded before the tiny recipe see it now
                for name, value in list(namespace.items()):
                    if isinstance(value, Competition):
                        namespace[name] = Competition.load(value.root)
    assert executed > 20
    assert namespace["blend"]["members"] and namespace["summary"]
    assert (workspace / "competitions" / "digits" / "runs" / "r2" / "test.csv").exists()
    assert isinstance(namespace["kit"], type(kit))
