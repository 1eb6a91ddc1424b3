"""Where submissions go: the local offline leaderboard, or Kaggle (competition.platform)."""

from __future__ import annotations

from pathlib import Path

from kit.competition import Competition
from kit.errors import ConfigError

PLATFORMS = ("local", "kaggle")


def _platform(competition: Competition) -> str:
    platform = competition.config.competition.platform
    if platform not in PLATFORMS:
        raise ConfigError(
            f"competition.platform {platform!r} is unknown: use one of {', '.join(PLATFORMS)}"
        )
    return platform


def submit(competition: Competition, file: Path, message: str) -> dict:
    """Validate file against sample_submission, then submit it to the competition's platform."""
    from kit.data.layout import class_list, read_train_items
    from kit.submission import check_submission

    check_submission(competition, Path(file), class_list(read_train_items(competition)))
    if _platform(competition) == "kaggle":
        from kit.platforms import kaggle

        slug = competition.config.competition.source or competition.name
        return kaggle.submit(slug, Path(file), message)
    from kit.platforms.local import LocalLeaderboard

    board = LocalLeaderboard()
    try:
        return board.submit(competition.name, Path(file), message)
    finally:
        board.close()


def leaderboard(competition: Competition, *, private: bool = False):
    """The competition's leaderboard as a table (private scores: the host's view)."""
    if _platform(competition) == "kaggle":
        import pandas as pd

        from kit.platforms import kaggle

        slug = competition.config.competition.source or competition.name
        return pd.DataFrame(kaggle.leaderboard(slug))
    from kit.platforms.local import LocalLeaderboard

    board = LocalLeaderboard()
    try:
        return board.leaderboard(competition.name, private=private)
    finally:
        board.close()
