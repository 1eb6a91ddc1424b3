"""The `kit` command line: parse, make one library call, print. Heavy imports stay inside commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from kit.errors import FoldsError, KitError, ProblemsError


class KitGroup(click.Group):
    """The one error boundary: a KitError becomes one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ProblemsError as error:
            for problem in error.problems:
                click.echo(f"Error: {error.path}: {problem}", err=True)
            sys.exit(error.exit_code)
        except KitError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)


def competition_options(func):
    """-C/--competition and --set, shared by every command that works in a competition folder."""
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override a kit.toml value for this command, e.g. --set train.epochs=3.",
    )(func)
    return click.option(
        "-C",
        "--competition",
        "root",
        default=".",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The competition folder (holds kit.toml).",
    )(func)


def load(root: Path, overrides: tuple[str, ...] = ()):
    from kit.competition import Competition

    return Competition.load(root, overrides)


def warn_open_credentials(competition=None) -> None:
    """Before a Kaggle call: warn, with the chmod 600 fix, when kaggle.json is open to others."""
    if competition is not None and competition.config.competition.platform != "kaggle":
        return
    from kit.platforms.kaggle import check_credentials_file

    warning = check_credentials_file()
    if warning:
        click.echo(f"Warning: {warning}", err=True)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kit")
def cli():
    """kit: a Kaggle-style offline competition kit for image classification.

    \b
    Example, the whole loop on the bundled digits competition:
      kit new digits --example digits
      kit run -C competitions/digits
    """


@cli.command()
@click.argument("name")
@click.option("--example", type=click.Choice(["digits"]), help="Bundled offline example data.")
@click.option("--kaggle", "kaggle_slug", metavar="SLUG", help="A Kaggle competition's slug.")
@click.option(
    "--parent",
    default="competitions",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that receives the competition folder.",
)
def new(name, example, kaggle_slug, parent):
    """Scaffold a competition folder from templates/competition.

    \b
    Example:
      kit new digits --example digits
      kit new cassava --kaggle cassava-leaf-disease-classification
    """
    from kit.competition import new_competition

    competition = new_competition(name, parent, example=example, kaggle=kaggle_slug)
    click.echo(f"created {competition.root}")
    click.echo(f"next: kit download -C {competition.root}")


@cli.command()
@competition_options
@click.option("--force", is_flag=True, help="Fetch or rebuild even when the data is current.")
@click.option("--limit", type=click.IntRange(min=20), help="Build only N images of an example.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--list", "list_only", is_flag=True, help="Kaggle: list the files, fetch nothing.")
def download(root, overrides, force, limit, quiet, list_only):
    """Put the competition's data under data/ (and register a local answer key).

    On Kaggle competitions: the official client, resumed when cut, extracted safely, skipped
    when current.

    \b
    Example:
      kit download -C competitions/digits
    """
    from kit.data.download import download as download_data

    competition = load(root, overrides)
    if list_only:
        from kit.platforms import list_files

        for row in list_files(competition):
            click.echo(f"{row['name']}  {row['size']:,} bytes  {row['creation_date'] or ''}")
        return
    result = download_data(competition, force=force, limit=limit, progress=not quiet)
    if result.get("warning"):
        click.echo(f"Warning: {result['warning']}", err=True)
    state = "already current" if result.get("skipped") else "ready"
    files = f" ({result['files']} files extracted)" if result.get("files") else ""
    click.echo(f"{result['data_dir']}: {state}{files}")


@cli.command()
@competition_options
@click.option("--force", is_flag=True, help="Overwrite an existing folds.csv.")
@click.option("--check", is_flag=True, help="Audit the existing folds.csv for leaks instead.")
def folds(root, overrides, force, check):
    """Write folds.csv (stratified, grouped or multi-label k-fold), once; --check audits it for leaks.

    \b
    Example:
      kit folds -C competitions/digits
      kit folds -C competitions/digits --check
    """
    from kit.data.folds import check_folds, make_folds

    competition = load(root, overrides)
    if check:
        problems = check_folds(competition)
        if problems:
            raise FoldsError(str(competition.folds_csv), problems)
        click.echo(f"{competition.folds_csv}: no leaks found")
        return
    table = make_folds(competition, force=force)
    counts = table["fold"].value_counts().sort_index().tolist()
    click.echo(f"{competition.folds_csv}: {len(table)} images in folds of {counts}")
    if "group" in table.columns:
        click.echo(f"{table['group'].nunique()} groups, each kept within one fold")


@cli.command()
@competition_options
@click.option("--max-images", type=click.IntRange(min=1), help="Decode at most N images for stats.")
def eda(root, overrides, max_images):
    """Write eda.html: classes, folds, sizes, modes, channel stats, samples, duplicates.

    \b
    Example:
      kit eda -C competitions/digits
    """
    from kit.data.eda import report_competition

    result = report_competition(load(root, overrides), max_images=max_images)
    click.echo(f"{result['n_images']} images, {result['n_classes']} classes")
    click.echo(
        f"mean {[round(v, 4) for v in result['mean'] or []]}  std {[round(v, 4) for v in result['std'] or []]}"
    )
    click.echo(
        f"{len(result['duplicates'])} duplicate group(s), {len(result['corrupt'])} unreadable file(s)"
    )
    click.echo(f"wrote {result['report']}")


def parse_folds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KitError(
            f"--folds {text!r}: give fold numbers separated by commas, e.g. 0,1"
        ) from None


@cli.command()
@competition_options
@click.option("--name", "run", help="Run name (default: <model>-<timestamp>).")
@click.option("--folds", "fold_list", help="Train only these folds, e.g. 0,1.")
@click.option("--resume", "resume_run", metavar="RUN", help="Continue RUN: skip finished folds.")
@click.option("--nproc", default=1, type=click.IntRange(min=1), help="DDP ranks via torchrun.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--skip-bad", is_flag=True, help="Train without undecodable images (data.skip_bad).")
def train(root, overrides, run, fold_list, resume_run, nproc, quiet, skip_bad):
    """Train every fold; write runs/RUN/ with best.pt per fold, oof.csv, metrics.json, report.html.

    --resume RUN continues an interrupted run from each fold's last.pt (exactly, on CPU with
    train.deterministic); --folds 0,1 trains a subset, and the run's oof.csv and CV cover every
    fold once all exist; --nproc N runs N DDP ranks through torchrun (gloo on CPU, nccl on GPUs).

    \b
    Example:
      kit train -C competitions/digits --set train.epochs=3 --name quick
      kit train -C competitions/digits --name big --folds 0,1 --nproc 2
      kit train -C competitions/digits --resume big --folds 2,3,4
      kit train -C competitions/digits --skip-bad
    """
    import os

    from kit.train.cv import train_run

    if run and resume_run:
        raise KitError("give either --name (a new run) or --resume RUN (an existing one)")
    if skip_bad:
        overrides = (*overrides, "data.skip_bad=true")
    competition = load(root, overrides)
    if competition.config.data.skip_bad and "LOCAL_RANK" not in os.environ:
        from kit.data.folds import bad_training_images

        bad = bad_training_images(competition)
        click.echo(
            f"skipping {len(bad)} undecodable image(s)"
            + (f": {', '.join(bad)}" if 0 < len(bad) <= 3 else "")
        )
    if nproc > 1 and "LOCAL_RANK" not in os.environ:  # the launcher; torchrun's ranks train
        from kit.train.cv import default_run_name
        from kit.train.ddp import launch

        name = resume_run or run or default_run_name(competition)
        args = ["train", "-C", str(competition.root), "--quiet"]
        args += [f"--set={text}" for text in overrides]
        args += ["--resume", name] if resume_run else ["--name", name]
        args += ["--folds", fold_list] if fold_list else []
        launch(nproc, args)
        from kit.train.cv import read_metrics

        result = {"run": name, "run_dir": str(competition.run_dir(name))}
        result.update(read_metrics(competition.run_dir(name)))
    else:
        result = train_run(
            competition, resume_run or run, folds=parse_folds(fold_list), progress=not quiet,
            resume=bool(resume_run),
        )  # fmt: skip
        if int(os.environ.get("RANK", 0)) != 0 or os.environ.get("KIT_LAUNCHED"):
            return  # one process reports: rank 0, or the launcher that started the ranks
    missing = (
        f"; folds still to train: {result['missing_folds']}" if result.get("missing_folds") else ""
    )
    click.echo(
        f"run {result['run']}: CV {result['metric']} {result['cv']:.4f} ± {result['cv_std']:.4f} "
        f"(folds {', '.join(f'{s:.4f}' for s in result['folds'])}){missing}"
    )
    click.echo(f"artefacts: {result['run_dir']}")


@cli.group(name="runs", invoke_without_command=True)
@competition_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@click.pass_context
def runs_group(ctx, root, overrides, as_json):
    """List the competition's runs: model, CV ± std, epochs, time, commit, folds, LB scores.

    \b
    Example:
      kit runs -C competitions/digits
      kit runs show -C competitions/digits quick
    """
    ctx.obj = (root, overrides)
    if ctx.invoked_subcommand is not None:
        return
    from kit.ledger import list_runs

    table = list_runs(load(root, overrides))
    if as_json:
        click.echo(table.to_json(orient="records", indent=2))
    elif table.empty:
        click.echo("no runs yet: kit train")
    else:
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.5f}"))


@runs_group.command(name="show")
@click.option(
    "-C",
    "--competition",
    "show_root",
    type=click.Path(file_okay=False, path_type=Path),
    help="The competition folder (also accepted before `show`).",
)
@click.argument("run")
@click.pass_obj
def runs_show(obj, show_root, run):
    """Details of one run: scores per fold and class, submissions, report path.

    \b
    Example:
      kit runs show -C competitions/digits quick
    """
    from kit.ledger import show_run

    root, overrides = obj
    competition = load(show_root or root, overrides)
    click.echo(json.dumps(show_run(competition, run), indent=2, default=str))


@cli.command()
@competition_options
@click.argument("run")
@click.option(
    "--tta",
    help="Comma-separated views overriding predict.tta, e.g. identity,hflip; 'auto' keeps only "
    "the views of predict.tta that raise the OOF score ('auto,identity,hflip': among these).",
)
@click.option("--merge", type=click.Choice(["mean", "gmean"]), help="How views merge.")
@click.option("--fold-merge", type=click.Choice(["prob", "logit"]), help="How folds merge.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def predict(root, overrides, run, tta, merge, fold_merge, quiet):
    """Predict the test set with every fold of RUN and its TTA views -> runs/RUN/test.csv.

    \b
    Example:
      kit predict -C competitions/digits quick
      kit predict -C competitions/digits quick --tta auto,identity,hflip,shift:1,0
    """
    from kit.infer.predict import parse_tta_option, predict_run

    views, auto = parse_tta_option(tta)
    result = predict_run(
        load(root, overrides), run, tta=views, auto=auto or None, merge=merge,
        fold_merge=fold_merge, progress=not quiet,
    )  # fmt: skip
    click.echo(
        f"CV with TTA {result['metric']} {result['cv_tta']:.4f} (without {result['cv']:.4f})"
    )
    for view, score in result["cv_by_view"].items():
        kept = "kept" if view in result["tta"] else "dropped"
        click.echo(f"  view {view:<12} OOF {score:.4f}  {kept}")
    click.echo(f"wrote {result['test_csv']}")


@cli.command()
@competition_options
@click.argument("runs", nargs=-1, required=True)
@click.option("--name", required=True, help="Submission name: submissions/NAME.csv.")
@click.option(
    "--method",
    type=click.Choice(["mean", "rank", "gmean", "weights"]),
    help="Blend (default ensemble.method); weights = non-negative weights fitted on OOF.",
)
@click.option("--weights", help="Fixed weights, one per run, e.g. 0.7,0.3.")
@click.option(
    "--decide/--no-decide",
    default=None,
    help="Tune offsets / cut-points / thresholds on OOF for the metric (default ensemble.decide).",
)
def ensemble(root, overrides, runs, name, method, weights, decide):
    """Blend RUNS into a submission in the competition's format, with a card in blends/NAME/.

    \b
    Example:
      kit ensemble -C competitions/digits quick baseline --name blend1 --method weights --decide
    """
    from kit.infer.ensemble import ensemble_runs

    fixed = None
    if weights:
        try:
            fixed = [float(v) for v in weights.split(",")]
        except ValueError:
            raise KitError(f"--weights {weights!r}: give numbers separated by commas") from None
    result = ensemble_runs(
        load(root, overrides), list(runs), name, method=method, weights=fixed, decide=decide
    )
    for member in result["members"]:
        cv = "" if member["cv"] is None else f"  CV {member['cv']:.4f}"
        click.echo(f"  {member['run']:<20} weight {member['weight']:.3f}{cv}")
    if result["cv"] is not None:
        nested = result["cv_nested"]
        honest = "n/a: one fold" if nested is None else f"{nested:.4f}"
        click.echo(f"blend OOF {result['metric']} {result['cv']:.4f} (nested CV {honest})")
    if result["decision"]["kind"] != "none":
        click.echo(
            f"decision {result['decision']['kind']}: OOF {result['cv_before_decision']:.4f} -> "
            f"{result['cv']:.4f}"
        )
    click.echo(f"wrote {result['submission']} and {result['blend_dir']}/card.md")


@cli.command()
@competition_options
@click.argument("runs", nargs=-1, required=True)
@click.option("--name", required=True, help="Label set name: pseudo/NAME/labels.csv.")
@click.option(
    "--threshold", default=0.9, show_default=True, type=float,
    help="Keep test images whose top probability reaches this.",
)  # fmt: skip
@click.option("--hard", is_flag=True, help="Top class only (default: soft probability rows).")
def pseudo(root, overrides, runs, name, threshold, hard):
    """Pseudo-labels for confident test images from the fold ensembles of stage-1 RUNS.

    \b
    Example:
      kit pseudo -C competitions/digits r1 r2 --name p1 --threshold 0.95
    """
    from kit.infer.pseudo import make_pseudo_labels

    result = make_pseudo_labels(
        load(root, overrides), list(runs), name, threshold=threshold, soft=not hard
    )
    click.echo(
        f"{result['test_images']} of {result['test_total']} test images labelled "
        f"({'soft' if result['soft'] else 'hard'}), {result['train_images']} training images "
        f"with OOF soft labels; stage-1 runs {', '.join(result['stage1_runs'])}"
    )
    click.echo(f"wrote {result['labels_csv']}")


@cli.command()
@competition_options
@click.argument("file", type=click.Path(path_type=Path))
def validate(root, overrides, file):
    """Check FILE against sample_submission.csv; print every problem, exit 2 on any.

    \b
    Example:
      kit validate -C competitions/digits submissions/quick.csv
    """
    from kit.submission import check_submission

    competition = load(root, overrides)
    check_submission(competition, file)
    click.echo(f"{file}: valid")


@cli.command()
@competition_options
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("-m", "--message", required=True, help="Describe the submission.")
@click.option("--wait", is_flag=True, help="Kaggle: poll until scored, then show the score.")
@click.option("--run", "runs", multiple=True, help="Run(s) behind the file, for the ledger.")
@click.option("--kernel", metavar="OWNER/SLUG", help="Code competition: submit this kernel.")
@click.option("--version", type=click.IntRange(min=1), help="The kernel's version (--kernel).")
def submit(root, overrides, file, message, wait, runs, kernel, version):
    """Validate FILE, then submit it (local leaderboard or Kaggle, from competition.platform).

    Every accepted submission is recorded with its runs (run ledger, submissions/history.jsonl).

    \b
    Example:
      kit submit -C competitions/digits submissions/quick.csv -m "test_resnet, 5 folds, TTA"
      kit submit -C competitions/cassava submissions/r1.csv -m "r1" --wait
      kit submit -C competitions/cassava -m "kernel v3" --kernel alice/cassava-r1 --version 3
    """
    from kit.platforms import submit as submit_file

    if version is not None and kernel is None:
        raise KitError("--version goes with --kernel OWNER/SLUG")
    competition = load(root, overrides)
    warn_open_credentials(competition)
    result = submit_file(
        competition, file, message, wait=wait, runs=list(runs) or None,
        kernel=kernel, version=version,
    )  # fmt: skip
    what = kernel if kernel else file
    ref = f" (ref {result['ref']})" if result.get("ref") else ""
    if result.get("public_score") is None:
        click.echo(f"submitted {what}{ref}: {result.get('status', 'pending')}")
    else:
        metric = result.get("metric", "score")
        click.echo(f"submitted {what}{ref}: public {metric} {result['public_score']}")
    if "remaining_today" in result:
        click.echo(f"{result['remaining_today']} submission(s) left today")


@cli.command()
@competition_options
@click.option("--private", is_flag=True, help="Show private scores (the host's view).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@click.option("--top", default=20, show_default=True, help="Kaggle: rows from the top.")
def leaderboard(root, overrides, private, as_json, top):
    """Show the competition's leaderboard (on Kaggle: the top rows and your place).

    \b
    Example:
      kit leaderboard -C competitions/digits --private
    """
    from kit.platforms import leaderboard as read_leaderboard

    competition = load(root, overrides)
    warn_open_credentials(competition)
    table = read_leaderboard(competition, private=private, top=top)
    if as_json:
        click.echo(table.to_json(orient="records", indent=2))
    elif table.empty:
        click.echo("no submissions yet")
    else:
        yours = table[table["you"]] if "you" in table.columns else table.iloc[0:0]
        shown = table.drop(columns="you") if "you" in table.columns else table
        click.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
        if "you" in table.columns:
            place = f"rank {yours['rank'].iloc[0]}" if len(yours) else "not on the board"
            click.echo(f"your place: {place}")


@cli.command()
@competition_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def submissions(root, overrides, as_json):
    """List your submissions to the competition, newest first, with their scores.

    \b
    Example:
      kit submissions -C competitions/cassava
    """
    from kit.platforms import submissions as read_submissions

    competition = load(root, overrides)
    warn_open_credentials(competition)
    table = read_submissions(competition)
    if as_json:
        click.echo(table.to_json(orient="records", indent=2))
    elif table.empty:
        click.echo("no submissions yet")
    else:
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.5f}"))


def parse_ints(text: str | None, option: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KitError(f"{option} {text!r}: give numbers separated by commas, e.g. 0,1,2") from None


@cli.group()
def bench():
    """Measure parts of the pipeline on this machine.

    \b
    Example:
      kit bench data -C competitions/digits
    """


@bench.command(name="data")
@competition_options
@click.option("--workers", help="num_workers values to time, e.g. 0,1,2 (default 0,1,2,4).")
@click.option("--batch-sizes", help="Batch sizes to time, e.g. 32,64 (default: half and train's).")
@click.option("--batches", default=8, show_default=True, type=click.IntRange(min=1),
              help="Batches timed per setting.")  # fmt: skip
@click.option("--write", is_flag=True, help="Write the recommended train.num_workers to kit.toml.")
def bench_data_command(root, overrides, workers, batch_sizes, batches, write):
    """Time decode, augmentation, collate and the DataLoader; recommend num_workers.

    \b
    Example:
      kit bench data -C competitions/digits --workers 0,1,2 --batch-sizes 32,64 --write
    """
    from kit.data.bench import bench_data, format_table

    result = bench_data(
        load(root, overrides), workers=parse_ints(workers, "--workers"),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes"), batches=batches, write=write,
    )  # fmt: skip
    click.echo(format_table(result))
    if result["written"]:
        click.echo(f"wrote [train] {result['written']} to kit.toml")


@cli.group()
def kernel():
    """Offline Kaggle kernels for code competitions: build, run locally, push.

    \b
    Example:
      kit kernel build -C competitions/cassava r1
      kit kernel run-local -C competitions/cassava r1
      kit kernel push -C competitions/cassava r1
    """


@kernel.command(name="build")
@competition_options
@click.argument("run")
def kernel_build(root, overrides, run):
    """Write kernels/SLUG/: inference.py, kernel-metadata.json and the dataset of RUN.

    \b
    Example:
      kit kernel build -C competitions/cassava r1
    """
    from kit.kernel import build_kernel

    result = build_kernel(load(root, overrides), run)
    click.echo(f"kernel {result['kernel']} (internet off), dataset {result['dataset']}")
    click.echo(f"dataset files: {', '.join(result['files'])}")
    click.echo(f"wrote {result['kernel_dir']}")


@kernel.command(name="run-local")
@competition_options
@click.argument("run")
@click.option("--require-isolation", is_flag=True, help="Fail unless the network can be cut.")
def kernel_run_local(root, overrides, run, require_isolation):
    """Run RUN's kernel as Kaggle would (no network) and compare it with kit predict's.

    \b
    Example:
      kit kernel run-local -C competitions/cassava r1
    """
    from kit.kernel import KernelError, run_local

    result = run_local(load(root, overrides), run, require_isolation=require_isolation)
    if not result["isolated"]:
        click.echo(
            "Warning: `unshare -n` is unavailable here, so the kernel ran with the network "
            "fenced only by a dead proxy; run as root for a real no-network run",
            err=True,
        )
    if not result["matches"]:
        raise KernelError(
            f"{result['submission']}: {result['rows_differing']} row(s) differ from "
            f"{result['expected']} (kit predict + ensemble of the run); see {result['log']}"
        )
    click.echo(f"kernel ran offline: {result['submission']} matches {result['expected']}")


@kernel.command(name="push")
@competition_options
@click.argument("run")
@click.option("-m", "--message", default="", help="Version notes for the dataset.")
def kernel_push(root, overrides, run, message):
    """Create or version RUN's dataset on Kaggle, then push its kernel.

    \b
    Example:
      kit kernel push -C competitions/cassava r1
    """
    from kit.kernel import push_kernel

    warn_open_credentials()
    result = push_kernel(load(root, overrides), run, notes=message)
    dataset, pushed = result["dataset"], result["kernel"]
    click.echo(f"dataset {dataset['ref']} {'created' if dataset['created'] else 'versioned'}")
    click.echo(f"kernel {pushed['ref']} version {pushed['version']}: {pushed['url']}")
    click.echo(
        f"submit it with: kit submit -m MSG --kernel {pushed['ref']} --version {pushed['version']}"
    )


@cli.command(name="run")
@competition_options
@click.option("--name", "run", help="Run name (default: <model>-<timestamp>).")
@click.option("-m", "--message", default="", help="Submission message.")
@click.option("--no-submit", is_flag=True, help="Stop after validating the submission.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run_command(root, overrides, run, message, no_submit, quiet):
    """Every stage in order: download, folds, train, predict, ensemble, validate, submit.

    \b
    Example:
      kit run -C competitions/digits
    """
    from kit.pipeline import run_all

    summary = run_all(
        load(root, overrides), run=run, message=message, submit=not no_submit,
        progress=not quiet, echo=click.echo,
    )  # fmt: skip
    click.echo(json.dumps(summary, indent=2))


def main() -> None:
    cli(prog_name="kit")
