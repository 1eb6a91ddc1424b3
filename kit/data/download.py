"""`kit download`: put the competition's data under data/, from the bundled example or Kaggle."""

from __future__ import annotations

import json

from kit.competition import EXAMPLES, Competition
from kit.errors import ConfigError


def download(
    competition: Competition,
    *,
    force: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Fetch or build data/; skip what is current. For examples, register the hidden answer key.

    limit builds only that many images of an example (quick trials and tests). On Kaggle,
    progress shows the client's progress bar, and the result's "warning" says when kaggle.json
    is readable by other users (with the chmod 600 fix).
    """
    settings = competition.config.competition
    source = settings.source
    if source.startswith("example:"):
        return _build_example(
            competition, source.removeprefix("example:"), force=force, limit=limit
        )
    if settings.platform == "kaggle":
        from kit.platforms import kaggle

        slug = source or competition.name
        warning = kaggle.check_credentials_file()
        files = kaggle.download(slug, competition.data_dir, force=force, progress=progress)
        return {
            "source": f"kaggle:{slug}",
            "data_dir": str(competition.data_dir),
            "files": len(files),
            "skipped": not files,
            "warning": warning,
        }
    raise ConfigError(
        'competition.source in kit.toml is empty: set it to "example:digits" or a Kaggle slug '
        'with competition.platform = "kaggle"'
    )


def _build_example(
    competition: Competition, example: str, *, force: bool, limit: int | None
) -> dict:
    from kit.data.examples import build_digits
    from kit.platforms.local import LocalLeaderboard

    if example not in EXAMPLES:
        raise ConfigError(f"competition.source example {example!r} is unknown: use example:digits")
    board = LocalLeaderboard()
    try:
        manifest = competition.data_dir / "DATA.json"
        current = (
            manifest.exists()
            and json.loads(manifest.read_text()).get("limit") == limit
            and board.has(competition.name)
        )
        if current and not force:
            return {"source": f"example:{example}", "data_dir": str(competition.data_dir),
                    "skipped": True}  # fmt: skip
        answers = build_digits(competition.data_dir, limit=limit)
        config = competition.config
        board.register(
            competition.name, answers, metric=config.metric.name,
            daily_limit=config.competition.daily_limit, id_column=config.submission.id_column,
            target_column=config.submission.target_column,
        )  # fmt: skip
    finally:
        board.close()
    return {
        "source": f"example:{example}",
        "data_dir": str(competition.data_dir),
        "answer_key": str(board.path),
        "skipped": False,
    }
