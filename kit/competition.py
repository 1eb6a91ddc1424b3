"""A competition folder: its config and the fixed names of everything kit writes in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kit.config import CONFIG_NAME, Config, load_config
from kit.names import named_dir
from kit.run import Run


class Folder:
    """A fixed name inside the competition folder: `competition.runs_dir` is root/runs."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, competition: Competition, owner: type | None = None) -> Path:
        return competition.root / self.name


KERNEL_MARKER = "kit-kernel.json"  # in a kernel's dataset: names the run, lays out its files


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

    data_dir = Folder("data")
    folds_csv = Folder("folds.csv")
    runs_dir = Folder("runs")
    submissions_dir = Folder("submissions")
    blends_dir = Folder("blends")
    pseudo_dir = Folder("pseudo")
    kernels_dir = Folder("kernels")
    cache_dir = Folder("cache")

    def kernel_marker(self, slug: str) -> Path:
        """kernels/<slug>/dataset/kit-kernel.json: names the run a built kernel packages."""
        return self.kernels_dir / slug / "dataset" / KERNEL_MARKER

    def run(self, name: str) -> Run:
        """An existing run (kit/run.py owns runs/<name>/), or a KitError listing the runs."""
        return Run.open(self, name)

    def run_dir(self, run: str, *, must_exist: bool = True) -> Path:
        if must_exist:
            return Run.open(self, run).dir
        return named_dir(self.runs_dir, run, "run", self.root)  # a slug, inside the folder

    def blend_dir(self, name: str) -> Path:
        """blends/<name>/ for a user-given blend name (a slug, inside the folder)."""
        return named_dir(self.blends_dir, name, "blend", self.root)

    def pseudo_set_dir(self, name: str, what: str = "pseudo-label set") -> Path:
        """pseudo/<name>/ for a user-given label set name (a slug, inside the folder)."""
        return named_dir(self.pseudo_dir, name, what, self.root)
