"""One torchrun rank of `kit train --nproc N`: train_run as the launcher (kit/train/ddp.py) asked,
then its result or error in rank<k>.json, never in its output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kit.competition import Competition
from kit.config import config_from_dict
from kit.errors import KitError
from kit.fileio import write_json
from kit.train import ddp
from kit.train.cv import train_run


def rank_main(spec_dir: Path) -> int:
    """One torchrun rank: train_run as the launcher asked, then report to rank<k>.json."""
    rank = ddp.rank_and_world()[0]
    report = spec_dir / f"{ddp.REPORT_PREFIX}{rank}.json"
    spec = json.loads((spec_dir / "job.json").read_text())
    try:
        competition = Competition(Path(spec["root"]), config_from_dict(spec["config"]))
        result = train_run(
            competition,
            spec["run"],
            folds=spec["folds"],
            resume=spec["resume"],
            progress=spec["progress"] and rank == 0,
        )
    except KitError as error:
        write_json(report, {"error": str(error)})
        return error.exit_code
    except BaseException as error:
        write_json(report, {"error": f"rank {rank} failed: {type(error).__name__}: {error}"})
        raise
    write_json(report, {"result": result.to_dict() if rank == 0 else None})
    return 0


if __name__ == "__main__":
    sys.exit(rank_main(Path(sys.argv[1])))
