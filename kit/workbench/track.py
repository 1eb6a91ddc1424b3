"""Experiment tracking: TensorBoard event files for every run, MLflow when [track] mlflow is set.

What is recorded, for each run: the resolved config (TensorBoard text, MLflow params), every
epoch of every fold (train loss, validation loss, the metric, lr), each fold's best score, the
CV and its std (when training ends), the CV with TTA (`kit predict`) and leaderboard scores
(`kit submit`). Event files live in runs/<run>/tb/, so `tensorboard --logdir runs` compares runs;
the MLflow run id is kept in runs/<run>/track.json so later scores land in the same MLflow run.

Tag names (TensorBoard and MLflow alike): fold<k>/loss, fold<k>/val_loss, fold<k>/<metric>,
fold<k>/lr (step = epoch), fold<k>/best (step = fold), and cv/<metric>, cv/std, cv/tta,
lb/public, lb/private. MLflow is imported only when a URI is set (mlflow or mlflow-skinny).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from kit.competition import Competition
from kit.config import dump_toml
from kit.errors import ConfigError
from kit.fileio import write_json

TB_DIR = "tb"  # runs/<run>/tb/: TensorBoard event files
TRACK_FILE = "track.json"  # runs/<run>/track.json: the MLflow run this kit run logs to
EPOCH_KEYS = ("loss", "val_loss", "lr")  # besides the metric, what an epoch event tracks
PARAM_CHARS = 500  # MLflow refuses long param values; a pipeline list is cut here


def mlflow_uri(competition: Competition) -> str:
    """[track] mlflow as a URI: a relative file path resolves under the competition folder."""
    uri = competition.config.track.mlflow.strip()
    if not uri:
        return ""
    if uri.startswith("file:") or "://" not in uri and ":" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not path.is_absolute():
            path = competition.root / path
        # MLflow 3 keeps its file store for users who ask for it by name (as here)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return path.resolve().as_uri()
    return uri


class EventWriter:
    """TensorBoard event files through tensorboard's own writer (no torch import: `kit submit`
    stays fast); scalars and text, the summaries `tensorboard` and EventAccumulator read."""

    def __init__(self, log_dir: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.file = EventFileWriter(str(log_dir))

    def _write(self, summary, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self.file.add_event(Event(summary=summary, step=int(step), wall_time=time.time()))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write(Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]), step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

        metadata = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(
                plugin_name="text", content=TextPluginData(version=0).SerializeToString()
            )
        )
        tensor = TensorProto(
            dtype="DT_STRING",
            string_val=[text.encode("utf-8")],
            tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
        )
        self._write(Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=tensor)]), step)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Tracker:
    """The trackers of one run: always TensorBoard, MLflow when configured. Rank 0 only."""

    def __init__(self, competition: Competition, run_dir: Path):
        self.metric = competition.config.metric.name
        self.writer = EventWriter(run_dir / TB_DIR)
        self.mlflow = None
        self.run_id = None
        self.closed = False
        uri = mlflow_uri(competition)
        if uri:
            self.mlflow, self.run_id = _mlflow_run(competition, run_dir, uri)

    def log_config(self, config: dict) -> None:
        self.writer.add_text("config", "```toml\n" + dump_toml(config) + "\n```", 0)
        if self.mlflow is not None:
            from mlflow.entities import Param

            params = [
                Param(f"{section}.{key}", str(value)[:PARAM_CHARS])
                for section, values in config.items()
                for key, value in values.items()
            ]
            for start in range(0, len(params), 100):  # MLflow takes 100 params per batch
                if self.mlflow is not None:
                    self._mlflow_call("log_batch", self.run_id, params=params[start : start + 100])

    def scalars(self, values: dict[str, float | None], step: int = 0) -> None:
        values = {k: float(v) for k, v in values.items() if v is not None}
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # readable while the run goes on
        if self.mlflow is not None and values:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._mlflow_call(
                "log_batch",
                self.run_id,
                metrics=[Metric(k, v, now, step) for k, v in values.items()],
            )

    def _mlflow_call(self, method: str, *args, **kwargs) -> None:
        """An MLflow call that cannot fail training: on an error, warn once and stop using MLflow
        for this run (TensorBoard goes on)."""
        try:
            getattr(self.mlflow, method)(*args, **kwargs)
        except Exception as error:
            warnings.warn(f"MLflow logging stopped for this run: {error}", stacklevel=3)
            self.mlflow = None

    def epoch(self, event: dict) -> None:
        """The train_fold on_epoch hook: one epoch event of log.jsonl."""
        fold = event["fold"]
        keys = (*EPOCH_KEYS, self.metric)
        self.scalars({f"fold{fold}/{k}": event.get(k) for k in keys}, step=event["epoch"])

    def fold(self, summary: dict) -> None:
        self.scalars({f"fold{summary['fold']}/best": summary["score"]}, step=summary["fold"])

    def close(self, finished: bool = True) -> None:
        """Close the event file; end the MLflow run (FINISHED or FAILED). Later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        self.writer.close()
        if self.mlflow is not None:
            self._mlflow_call("set_terminated", self.run_id, "FINISHED" if finished else "FAILED")


def _mlflow_run(competition: Competition, run_dir: Path, uri: str):
    """(MlflowClient, run id): the run recorded in track.json, else a new one in the experiment."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            f"track.mlflow = {competition.config.track.mlflow!r} needs MLflow: "
            'pip install mlflow-skinny, or set track.mlflow = ""'
        ) from None
    client = MlflowClient(tracking_uri=uri)
    path = run_dir / TRACK_FILE
    if path.exists():
        known = json.loads(path.read_text())
        if known.get("mlflow_uri") == uri:
            return client, known["mlflow_run_id"]
    name = competition.config.track.experiment or competition.name
    try:  # the first call that reaches the store: a wrong URI fails here, before training
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        created = client.create_run(experiment_id, run_name=run_dir.name)
    except Exception as error:
        detail = " ".join(str(error).split())[:200]
        raise ConfigError(
            f"track.mlflow = {competition.config.track.mlflow!r}: MLflow store not usable "
            f'({type(error).__name__}: {detail}); fix the URI or set track.mlflow = ""'
        ) from None
    write_json(path, {"mlflow_uri": uri, "mlflow_run_id": created.info.run_id, "experiment": name})
    return client, created.info.run_id


def open_tracker(competition: Competition, run_dir: Path, *, new: bool) -> Tracker:
    """The tracker `kit train` feeds; a new run also records its config."""
    tracker = Tracker(competition, run_dir)
    if new:
        tracker.log_config(competition.config.to_dict())
    return tracker


def track_scores(competition: Competition, run: str, values: dict[str, float | None]) -> None:
    """Add run-level scores after training (cv/tta from `kit predict`, lb/* from `kit submit`).

    A run trained before tracking existed (no tb/ folder) or a name that is no run is skipped;
    a tracker that fails (a tracking server down) warns and never fails the prediction or
    submission that called it."""
    run_dir = competition.runs_dir / run
    if not (run_dir / TB_DIR).is_dir() or all(v is None for v in values.values()):
        return
    try:
        tracker = Tracker(competition, run_dir)
        try:
            tracker.scalars(values)
        finally:
            tracker.writer.close()  # the MLflow run keeps the state training left it in
    except Exception as error:
        warnings.warn(f"tracking {', '.join(values)} of run {run!r} failed: {error}", stacklevel=2)


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of runs/<run>/tb/, read back with tensorboard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / TB_DIR), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
