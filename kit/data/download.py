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
    replace_key: bool = False,
) -> dict:
    """Fetch or build data/; skip what is current. For examples, register the hidden answer key.

    limit builds only that many images of an example (quick trials and tests). On Kaggle,
    progress shows the client's progress bar (`kit download` warns first when kaggle.json is
    readable by other users, with the chmod 600 fix). replace_key: the host replaces an
    answer key registered already (its limit, its answers, or another folder's key of that name).
    """
    from kit.platforms import create_platform

    return create_platform(competition).download(
        force=force, limit=limit, progress=progress, replace_key=replace_key
    )


def build_example(
    competition: Competition,
    example: str,
    *,
    force: bool,
    limit: int | None,
    replace_key: bool = False,
) -> dict:
    from kit.data.examples import build_digits
    from kit.platforms.local import LocalLeaderboard

    if example not in EXAMPLES:
        raise ConfigError(f"competition.source example {example!r} is unknown: use example:digits")
    with LocalLeaderboard() as board:
        manifest = competition.data_dir / "DATA.json"
        same_limit = manifest.exists() and json.loads(manifest.read_text()).get("limit") == limit
        current = same_limit and board.has(competition.name)
        if current and not force:
            return {
                "source": f"example:{example}",
                "data_dir": str(competition.data_dir),
                "skipped": True,
            }
        config = competition.config
        key = {
            "metric": config.metric.name,
            "daily_limit": config.competition.daily_limit,
            "id_column": config.submission.id_column,
            "target_column": config.submission.target_column,
            "root": competition.root,
        }
        if not replace_key:  # refuse before the data is rebuilt, not after
            board.check_registration(
                competition.name, answers_change=manifest.exists() and not same_limit, **key
            )
        answers = build_digits(competition.data_dir, limit=limit)
        board.register(competition.name, answers, replace=replace_key, **key)
    return {
        "source": f"example:{example}",
        "data_dir": str(competition.data_dir),
        "answer_key": str(board.path),
        "skipped": False,
    }
