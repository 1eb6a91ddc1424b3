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
@click.option(
    "--parent",
    default="competitions",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that receives the competition folder.",
)
def new(name, example, parent):
    """Scaffold a competition folder from templates/competition.

    \b
    Example:
      kit new digits --example digits
    """
    from kit.competition import new_competition

    competition = new_competition(name, parent, example=example)
    click.echo(f"created {competition.root}")
    click.echo(f"next: kit download -C {competition.root}")


@cli.command()
@competition_options
@click.option("--force", is_flag=True, help="Fetch or rebuild even when the data is current.")
@click.option("--limit", type=click.IntRange(min=20), help="Build only N images of an example.")
def download(root, overrides, force, limit):
    """Put the competition's data under data/ (and register a local answer key).

    \b
    Example:
      kit download -C competitions/digits
    """
    from kit.data.download import download as download_data

    result = download_data(load(root, overrides), force=force, limit=limit)
    state = "already current" if result.get("skipped") else "ready"
    click.echo(f"{result['data_dir']}: {state}")


@cli.command()
@competition_options
@click.option("--force", is_flag=True, help="Overwrite an existing folds.csv.")
@click.option("--check", is_flag=True, help="Audit the existing folds.csv for leaks instead.")
def folds(root, overrides, force, check):
    """Write folds.csv (stratified k-fold), once; --check audits it for leaks.

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
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(root, overrides, run, fold_list, quiet):
    """Train every fold; write runs/RUN/ with best.pt per fold, oof.csv and metrics.json.

    \b
    Example:
      kit train -C competitions/digits --set train.epochs=3 --name quick
    """
    from kit.train.cv import train_run

    result = train_run(load(root, overrides), run, folds=parse_folds(fold_list), progress=not quiet)
    click.echo(
        f"run {result['run']}: CV {result['metric']} {result['cv']:.4f} ± {result['cv_std']:.4f} "
        f"(folds {', '.join(f'{s:.4f}' for s in result['folds'])})"
    )
    click.echo(f"artefacts: {result['run_dir']}")


@cli.command()
@competition_options
@click.argument("run")
@click.option("--tta", help="Comma-separated views overriding predict.tta, e.g. identity,hflip.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def predict(root, overrides, run, tta, quiet):
    """Predict the test set with every fold of RUN and its TTA views -> runs/RUN/test.csv.

    \b
    Example:
      kit predict -C competitions/digits quick
    """
    from kit.infer.predict import predict_run

    views = [v.strip() for v in tta.split(",")] if tta else None
    result = predict_run(load(root, overrides), run, tta=views, progress=not quiet)
    click.echo(
        f"CV with TTA {result['metric']} {result['cv_tta']:.4f} (without {result['cv']:.4f})"
    )
    for view, score in result["cv_by_view"].items():
        click.echo(f"  view {view:<12} OOF {score:.4f}")
    click.echo(f"wrote {result['test_csv']}")


@cli.command()
@competition_options
@click.argument("runs", nargs=-1, required=True)
@click.option("--name", required=True, help="Submission name: submissions/NAME.csv.")
def ensemble(root, overrides, runs, name):
    """Average the probabilities of RUNS into a submission in the competition's format.

    \b
    Example:
      kit ensemble -C competitions/digits quick baseline --name blend1
    """
    from kit.infer.ensemble import ensemble_runs

    result = ensemble_runs(load(root, overrides), list(runs), name)
    if result["cv"] is not None:
        click.echo(f"blend OOF {result['metric']} {result['cv']:.4f}")
    click.echo(f"wrote {result['submission']}")


@cli.command()
@competition_options
@click.argument("file", type=click.Path(path_type=Path))
def validate(root, overrides, file):
    """Check FILE against sample_submission.csv; print every problem, exit 2 on any.

    \b
    Example:
      kit validate -C competitions/digits submissions/quick.csv
    """
    from kit.data.layout import class_list, read_train_items
    from kit.submission import check_submission

    competition = load(root, overrides)
    check_submission(competition, file, class_list(read_train_items(competition)))
    click.echo(f"{file}: valid")


@cli.command()
@competition_options
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-m", "--message", required=True, help="Describe the submission.")
def submit(root, overrides, file, message):
    """Validate FILE, then submit it (local leaderboard or Kaggle, from competition.platform).

    \b
    Example:
      kit submit -C competitions/digits submissions/quick.csv -m "test_resnet, 5 folds, TTA"
    """
    from kit.platforms import submit as submit_file

    result = submit_file(load(root, overrides), file, message)
    click.echo(f"submitted {file}: public {result.get('metric', 'score')} {result['public_score']}")
    if "remaining_today" in result:
        click.echo(f"{result['remaining_today']} submission(s) left today")


@cli.command()
@competition_options
@click.option("--private", is_flag=True, help="Show private scores (the host's view).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def leaderboard(root, overrides, private, as_json):
    """Show the competition's leaderboard.

    \b
    Example:
      kit leaderboard -C competitions/digits --private
    """
    from kit.platforms import leaderboard as read_leaderboard

    table = read_leaderboard(load(root, overrides), private=private)
    if as_json:
        click.echo(table.to_json(orient="records", indent=2))
    elif table.empty:
        click.echo("no submissions yet")
    else:
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.5f}"))


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
