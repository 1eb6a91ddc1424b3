"""`kit new`: a competition folder rendered from templates/competition, optionally with data."""

from __future__ import annotations

import re
import shutil
import string
from pathlib import Path

from kit.competition import Competition
from kit.config import CONFIG_NAME, set_toml_value, toml_value
from kit.data.examples import EXAMPLES
from kit.data.propose import bring_data, propose_data_section
from kit.errors import ConfigError, KitError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


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
    data: str | Path | None = None,
    link: bool = False,
) -> Competition:
    """Render templates/competition into parent/name; refuse to overwrite anything.

    kaggle names a Kaggle competition slug: the folder gets platform = "kaggle" and
    source = that slug, so `kit download` and `kit submit` go through the Kaggle client.
    data names data already on disk (a folder or a .zip): it is copied (link: symlinked) into
    data/, and kit.toml gets the [data], [task] and [submission] values that
    `kit.data.propose.propose_data_section` infers from it (no download needed).
    """
    if not SLUG.match(name):
        raise ConfigError(
            f"competition name {name!r} is not a slug: use lowercase letters, digits and '-'"
        )
    if example is not None and example not in EXAMPLES:
        raise ConfigError(f"--example {example!r} is unknown: choose one of {', '.join(EXAMPLES)}")
    if sum(x is not None for x in (example, kaggle, data)) > 1:
        raise ConfigError("--example, --kaggle and --data exclude each other: choose one source")
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
    if data is not None:
        try:
            _bring_data(staging, Path(data), link)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    staging.rename(root)  # the folder appears whole or not at all
    return Competition.load(root)


def _bring_data(staging: Path, source: Path, link: bool) -> None:
    """Copy or link the data into staging/data and write the proposed values into kit.toml."""
    bring_data(source, staging / "data", link=link)
    proposal = propose_data_section(staging, staging / "data")
    for section, values in proposal.values.items():
        for key, value in values.items():
            set_toml_value(staging / CONFIG_NAME, section, key, toml_value(value))
