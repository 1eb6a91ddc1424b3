"""`kit download`: put the competition's data under data/, from the bundled example or Kaggle."""

from __future__ import annotations

from kit.competition import Competition
from kit.platforms import create_platform


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
    return create_platform(competition).download(
        force=force, limit=limit, progress=progress, replace_key=replace_key
    )
