"""kit: a Kaggle-style offline competition kit for image classification.

The library behind the `kit` command; every command is one of these calls:

    from kit import Competition, new_competition, download, make_folds, train_run, predict_run
    from kit import ensemble_runs, submit, leaderboard, run_all

Names are imported lazily so that `import kit` (and `kit --help`) never loads torch.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"

# kit is offline at run time, and these are read when albumentations / timm are first imported:
# albumentations asks PyPI for a newer release unless told not to, and a hub lookup on a machine
# without internet hangs on retries instead of failing at once.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_EXPORTS = {
    "Competition": "kit.competition",
    "new_competition": "kit.scaffold",
    "load_config": "kit.config",
    "Config": "kit.config",
    "KitError": "kit.errors",
    "download": "kit.data.download",
    "make_folds": "kit.data.folds",
    "bench_data": "kit.data.bench",
    "read_train_items": "kit.data.layout",
    "read_test_items": "kit.data.layout",
    "train_run": "kit.train.cv",
    "list_runs": "kit.ledger",
    "show_run": "kit.ledger",
    "record_submission": "kit.ledger",
    "predict_run": "kit.infer.predict",
    "ensemble_runs": "kit.infer.ensemble",
    "tune_decision": "kit.infer.decision",
    "make_pseudo_labels": "kit.infer.pseudo",
    "check_drift": "kit.workbench.drift",
    "write_run_report": "kit.report",
    "write_runs_overview": "kit.report",
    "validate_submission": "kit.submission",
    "write_submission": "kit.submission",
    "submit": "kit.platforms",
    "leaderboard": "kit.platforms",
    "submissions": "kit.platforms",
    "build_kernel": "kit.kernel",
    "run_local": "kit.kernel",
    "push_kernel": "kit.kernel",
    "run_all": "kit.pipeline",
    "find_lr": "kit.workbench.lr_find",
    "run_sweep": "kit.workbench.sweep",
    "export_onnx": "kit.workbench.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kit' has no attribute {name!r}")
