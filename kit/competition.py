"""A competition folder: its config and the fixed names of everything kit writes in it."""

from __future__ import annotations

import re
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from kit.config import CONFIG_NAME, Config, load_config
from kit.errors import ConfigError, KitError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
EXAMPLES = ("digits",)


@dataclass
class Competition:
    """Paths of a competition folder; relative config paths resolve against root."""

    root: Path
    config: Config

    @classmethod
    def load(
        cls, root: str | Path = ".", overrides: list[str] | tuple[str, ...] = ()
    ) -> Competition:
        root = Path(root).resolve()
        return cls(root=root, config=load_config(root / CONFIG_NAME, overrides))

    @property
    def name(self) -> str:
        return self.config.competition.name or self.root.name

    def path(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def submissions_dir(self) -> Path:
        return self.root / "submissions"

    def run_dir(self, run: str, *, must_exist: bool = True) -> Path:
        path = self.runs_dir / run
        if must_exist and not (path / "config.toml").exists():
            known = sorted(p.name for p in self.runs_dir.glob("*") if (p / "config.toml").exists())
            hint = f"runs here: {', '.join(known)}" if known else "train one with `kit train`"
            raise KitError(f"run '{run}' not found in {self.runs_dir}: {hint}")
        return path


def templates_dir() -> Path:
    """templates/ ships inside the wheel as kit/templates and lives at the repo root in a checkout."""
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.exists() else Path(__file__).parent.parent / "templates"


def new_competition(
    name: str,
    parent: str | Path = "competitions",
    *,
    example: str | None = None,
    kaggle: str | None = None,
) -> Competition:
    """Render templates/competition into parent/name; refuse to overwrite anything.

    kaggle names a Kaggle competition slug: the folder gets platform = "kaggle" and
    source = that slug, so `kit download` and `kit submit` go through the Kaggle client.
    """
    if not SLUG.match(name):
        raise ConfigError(
            f"competition name {name!r} is not a slug: use lowercase letters, digits and '-'"
        )
    if example is not None and example not in EXAMPLES:
        raise ConfigError(f"--example {example!r} is unknown: choose one of {', '.join(EXAMPLES)}")
    if example is not None and kaggle is not None:
        raise ConfigError("--example and --kaggle exclude each other: choose one data source")
    if kaggle is not None and not SLUG.match(kaggle):
        raise ConfigError(
            f"--kaggle {kaggle!r} is not a Kaggle competition slug: copy it from the URL, "
            "e.g. cassava-leaf-disease-classification"
        )
    root = Path(parent) / name
    if root.exists():
        raise KitError(f"{root} already exists: pick another name or remove the folder first")
    source = f"example:{example}" if example else (kaggle or "")
    platform = "kaggle" if kaggle else "local"
    values = {"name": name, "source": source, "title": name, "platform": platform}
    source = templates_dir() / "competition"
    staging = root.with_name(f".{name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    for template in sorted(source.rglob("*")):
        if template.is_dir():
            continue
        relative = template.relative_to(source)
        target = staging / str(relative).replace("dot-", ".", 1).removesuffix(".tmpl")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = template.read_text()
        if template.suffix == ".tmpl":
            text = string.Template(text).substitute(values)
        target.write_text(text)
    staging.rename(root)  # the folder appears whole or not at all
    return Competition.load(root)
