"""Reading a trained run back in tests: its OOF table and its ledger row."""

from __future__ import annotations

import pandas as pd

from kit.competition import Competition
from kit.ledger import connect


def read_oof(competition: Competition, run: str) -> pd.DataFrame:
    return pd.read_csv(competition.runs_dir / run / "oof.csv", dtype={"id": str}).set_index("id")


def ledger_row(competition: Competition, run: str) -> dict:
    with connect(competition) as db:
        cursor = db.execute("select * from runs where run = ?", (run,))
        names = [c[0] for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))
