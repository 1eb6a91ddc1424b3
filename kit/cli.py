"""The `kit` command line: parse, make one library call, print. Heavy imports stay inside commands."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from kit.choices import BlendMethod, FoldMerge, ViewMerge, choices
from kit.errors import MAX_PROBLEMS, FoldsError, KitError, ProblemsError, message_of, one_line


class KitGroup(click.Group):
    """The one error boundary: whatever fails ends in one line on stderr, never a traceback.

    A KitError (the user's mistake) and an outside-world failure (kit.errors.describe: a full
    disk, a read-only folder, an unparsable table...) exit 2; Ctrl-C exits 130; a bug in kit
    exits 1, with its traceback saved under KIT_HOME (printed with `kit --debug`).
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ProblemsError as error:
            shown = error.problems[:MAX_PROBLEMS]
            for problem in shown:
                click.echo(f"Error: {one_line(f'{error.path}: {problem}')}", err=True)
            if len(error.problems) > len(shown):
                more = len(error.problems) - len(shown)
                click.echo(f"Error: {one_line(error.path)}: (+{more} more problems)", err=True)
            sys.exit(error.exit_code)
        except KitError as error:
            click.echo(f"Error: {one_line(message_of(error))}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted (Ctrl-C): run the command again to finish", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as error:
            _fail(ctx, error)


def _fail(ctx: click.Context, error: Exception) -> None:
    """An exception that is not a KitError: one line (and exit 2) when kit.errors.describe knows
    it, else an internal error (exit 1) whose traceback is saved, or printed with --debug."""
    import os
    import traceback

    from kit.errors import describe, save_traceback

    text = traceback.format_exc()
    debug = ctx.meta.get("kit.debug") or os.environ.get("KIT_DEBUG") == "1"
    if debug:
        click.echo(text.rstrip(), err=True)
    described = describe(error)
    if described is not None:
        message, code = described
        click.echo(f"Error: {one_line(message)}", err=True)
        sys.exit(code)
    saved = save_traceback(text)
    where = f"the traceback is in {saved}" if saved else "the traceback could not be saved"
    hint = "" if debug else "; `kit --debug ...` prints it"
    click.echo(
        f"Error: internal error in kit ({type(error).__name__}: {one_line(error, 200)}); "
        f"{where}{hint}",
        err=True,
    )
    sys.exit(1)


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


def comma_numbers(kind: type = float):
    """A Click callback: an option's comma-separated numbers of `kind` ("0.7,0.3", "0,1"), None
    when not given, or a one-line error naming the option."""
    example = "0,1" if kind is int else "0.7,0.3"

    def parse(ctx, param, text: str | None) -> list | None:
        if not text:
            return None
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise KitError(
                f"{param.opts[0]} {text!r}: give numbers separated by commas, e.g. {example}"
            ) from None

    return parse


def parallel_option(help: str):
    """--parallel auto|N; given, it starts the children's warm server (kit.warm) while the
    command is parsed, so the server's imports overlap this process's own."""

    def start_server(ctx, param, value: str | None) -> str | None:
        if value:
            from kit.warm import start_warm_server

            start_warm_server()
        return value

    return click.option("--parallel", metavar="auto|N", callback=start_server, help=help)


def json_option(func):
    """--json: print the command's result record as JSON instead of lines for a person."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


def prints_result(render):
    """--json, and printing the record the command returns: render(record) for a person, or JSON."""

    def decorate(func):
        @functools.wraps(func)
        def command(*args, as_json: bool, **kwargs):
            result = func(*args, **kwargs)
            click.echo(result.to_json() if as_json else render(result))

        return json_option(command)

    return decorate


def render_train(result) -> str:
    missing = f"; folds still to train: {result.missing_folds}" if result.missing_folds else ""
    folds = ", ".join(f"{s:.5f}" for s in result.folds)
    return (
        f"run {result.run}: CV {result.metric} {result.cv:.5f} ± {result.cv_std:.5f} "
        f"(folds {folds}){missing}\nartefacts: {result.run_dir}"
    )


def render_predict(result) -> str:
    lines = [f"CV with TTA {result.metric} {result.cv_tta:.5f} (without {result.cv:.5f})"]
    for view, score in result.cv_by_view.items():
        kept = "kept" if view in result.tta else "dropped"
        lines.append(f"  view {view:<12} OOF {score:.5f}  {kept}")
    return "\n".join([*lines, f"wrote {result.test_csv}"])


def render_blend(result) -> str:
    lines = []
    for member in result.members:
        cv = "" if member["cv"] is None else f"  CV {member['cv']:.5f}"
        lines.append(f"  {member['run']:<20} weight {member['weight']:.3f}{cv}")
    if result.cv is not None:
        nested = "n/a: one fold" if result.cv_nested is None else f"{result.cv_nested:.5f}"
        lines.append(f"blend OOF {result.metric} {result.cv:.5f} (nested CV {nested})")
    if result.decision["kind"] != "none":
        lines.append(
            f"decision {result.decision['kind']}: OOF {result.cv_before_decision:.5f} -> "
            f"{result.cv:.5f}"
        )
    return "\n".join([*lines, f"wrote {result.submission} and {result.blend_dir}/card.md"])


def render_submit(result, what) -> str:
    ref = f" (ref {result.ref})" if result.ref else ""
    if result.public_score is None:
        line = f"submitted {what}{ref}: {result.status}"
    else:
        from kit.ledger import format_score

        metric = result.metric or "score"
        line = f"submitted {what}{ref}: public {metric} {format_score(result.public_score)}"
    if result.remaining_today is not None:
        line += f"\n{result.remaining_today} submission(s) left today"
    return line


def load(root: Path, overrides: tuple[str, ...] = ()):
    from kit.competition import Competition

    return Competition.load(root, overrides)


def warn_open_credentials(competition=None) -> None:
    """Before a Kaggle call: warn, with the chmod 600 fix, when kaggle.json is open to others."""
    if competition is not None and competition.config.competition.platform != "kaggle":
        return
    from kit.platforms.kaggle_client import check_credentials_file

    warning = check_credentials_file()
    if warning:
        click.echo(f"Warning: {warning}", err=True)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kit")
@click.option("--debug", is_flag=True, help="On an internal error, print the whole traceback.")
@click.pass_context
def cli(ctx, debug):
    """kit: a Kaggle-style offline competition kit for image classification.

    \b
    Example, the whole loop on the bundled digits competition:
      kit new digits --example digits
      kit run -C competitions/digits
    """
    ctx.meta["kit.debug"] = debug


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
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True, path_type=Path),
    help="Data already on disk (a folder or a .zip): copied into data/, [data] proposed from it.",
)
@click.option("--link", is_flag=True, help="With --data: symlink the folder instead of copying.")
def new(name, example, kaggle_slug, parent, data_path, link):
    """Scaffold a competition folder from templates/competition.

    --data PATH brings data you already have (a course's zip, a manual download) into data/ and
    writes the [data], [task] and [submission] values it infers into kit.toml; it prints each
    inference with its evidence and what you must confirm.

    \b
    Example:
      kit new digits --example digits
      kit new cassava --kaggle cassava-leaf-disease-classification
      kit new course --data ~/Downloads/course.zip
    """
    from kit.scaffold import new_competition

    if link and data_path is None:
        raise KitError("--link goes with --data PATH")
    competition = new_competition(
        name, parent, example=example, kaggle=kaggle_slug, data=data_path, link=link
    )
    click.echo(f"created {competition.root}")
    if data_path is None:
        click.echo(f"next: kit download -C {competition.root}")
        return
    from kit.data.propose import propose_data_section

    proposal = propose_data_section(competition.root, competition.data_dir)
    how = "linked" if link else "copied"
    click.echo(f"{how} {data_path} into {competition.data_dir}; wrote into kit.toml:")
    for line in proposal.found:
        click.echo(f"  {line}")
    if proposal.confirm:
        click.echo("confirm (edit kit.toml where it is wrong):")
        for line in proposal.confirm:
            click.echo(f"  - {line}")
    click.echo(f"next: kit eda -C {competition.root}, then kit folds and kit train")


@cli.command()
@competition_options
@click.option("--force", is_flag=True, help="Fetch or rebuild even when the data is current.")
@click.option("--limit", type=click.IntRange(min=20), help="Build only N images of an example.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--list", "list_only", is_flag=True, help="Kaggle: list the files, fetch nothing.")
@click.option(
    "--replace-key",
    is_flag=True,
    help="Host: replace the registered answer key (its limit, answers or folder).",
)
def download(root, overrides, force, limit, quiet, list_only, replace_key):
    """Put the competition's data under data/ (and register a local answer key).

    On Kaggle competitions: the official client, resumed when cut, extracted safely, skipped
    when current.

    \b
    Example:
      kit download -C competitions/digits
    """
    from kit.data.download import download as download_data

    competition = load(root, overrides)
    warn_open_credentials(competition)
    if list_only:
        from kit.platforms import list_files

        for row in list_files(competition):
            click.echo(f"{row['name']}  {row['size']:,} bytes  {row['creation_date'] or ''}")
        return
    result = download_data(
        competition, force=force, limit=limit, progress=not quiet, replace_key=replace_key
    )
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
    joined = table.attrs.get("duplicates", {})
    if joined.get("byte_identical_joined") or joined.get("near_duplicate_joined"):
        near, merged = joined["near_duplicate_joined"], joined["declared_groups_merged"]
        message = f"joined {joined['byte_identical_joined']} byte-identical"
        message += f" and {near} near-identical" if near else ""
        message += " image(s) to the group of their copy"
        message += f"; {merged} declared group(s) merged into another" if merged else ""
        click.echo(message)
    if "group" in table.columns:
        click.echo(f"{table['group'].nunique()} groups, each kept within one fold")


@cli.command()
@competition_options
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    help="Decode N images (fixed seed) for pixel stats; 0 = all (default 3000).",
)
@click.option("--max-images", type=click.IntRange(min=1), hidden=True)  # the old name of --sample
def eda(root, overrides, sample, max_images):
    """Write eda.html: classes, folds, sizes, modes, channel stats, samples, duplicates.

    Sizes, modes and duplicates cover every file (headers and hashes); pixel statistics, samples
    and decode checks cover a fixed random sample (--sample).

    \b
    Example:
      kit eda -C competitions/digits
      kit eda -C competitions/digits --sample 500
    """
    from kit.data.eda import SAMPLE_IMAGES, report_competition

    count = sample if sample is not None else (max_images or SAMPLE_IMAGES)
    result = report_competition(load(root, overrides), max_images=count or None)
    click.echo(f"{result['n_images']} images, {result['n_classes']} classes")
    click.echo(
        f"mean {[round(v, 4) for v in result['mean'] or []]}  std {[round(v, 4) for v in result['std'] or []]}"
    )
    click.echo(
        f"{len(result['duplicates'])} duplicate group(s), {len(result['corrupt'])} unreadable file(s)"
    )
    if result.get("drift"):
        echo_drift(result["drift"])
    click.echo(f"wrote {result['report']}")


def echo_drift(result: dict) -> None:
    click.echo(
        f"train vs test: adversarial AUC {result['auc']:.3f} (95% interval "
        f"{result['auc_low']:.3f}-{result['auc_high']:.3f}) on {result['train_images']} training "
        f"and {result['test_images']} test images: {result['suggestion']}"
    )
    if result["duplicates"]:
        shown = ", ".join(d["test"] for d in result["duplicates"][:3])
        click.echo(
            f"Warning: {len(result['duplicates'])} test image(s) repeat a training image "
            f"(e.g. {shown}): the answer leaks into training",
            err=True,
        )


@cli.command()
@competition_options
@click.option(
    "--folds",
    "n_splits",
    default=5,
    show_default=True,
    type=click.IntRange(min=2),
    help="Folds of the train-vs-test model.",
)
@click.option(
    "--max-images",
    default=2000,
    show_default=True,
    type=click.IntRange(min=10),
    help="Images sampled per side (fixed seed).",
)
@click.option(
    "--near/--no-near",
    default=None,
    help="Also match near-identical images (default folds.near_duplicates).",
)
def drift(root, overrides, n_splits, max_images, near):
    """Adversarial validation: can a small model tell test images from training images?

    Writes drift/report.html (AUC with its interval, the most test-like training images,
    what differs, test images that repeat training images) and drift/train_scores.csv.

    \b
    Example:
      kit drift -C competitions/digits
      kit drift -C competitions/digits --near --max-images 500
    """
    from kit.workbench.drift import check_drift

    result = check_drift(load(root, overrides), n_splits=n_splits, max_images=max_images, near=near)
    echo_drift(result)
    click.echo(f"wrote {result['report']} and {result['train_scores']}")


@cli.command()
@competition_options
@click.option(
    "--name", "run", help="Run name (default: <model>-<timestamp>); a,b,c trains a list of runs."
)
@click.option("--runs", "runs_table", is_flag=True, help="Train kit.toml's [[runs]] list.")
@click.option(
    "--folds", "fold_list", callback=comma_numbers(int), help="Train only these folds, e.g. 0,1."
)
@click.option("--resume", "resume_run", metavar="RUN", help="Continue RUN: skip finished folds.")
@click.option("--nproc", default=1, type=click.IntRange(min=1), help="DDP ranks via torchrun.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--skip-bad", is_flag=True, help="Train without undecodable images (data.skip_bad).")
@parallel_option("Train up to N folds at once (a process each).")
@click.option(
    "--cluster", metavar="ray://HOST:PORT|auto|local", help="Train each fold as a Ray task."
)
@json_option
def train(
    root,
    overrides,
    run,
    runs_table,
    fold_list,
    resume_run,
    nproc,
    quiet,
    skip_bad,
    parallel,
    cluster,
    as_json,
):
    """Train every fold; write runs/RUN/ with best.pt per fold, oof.csv, metrics.json, report.html.

    --resume RUN continues an interrupted run from each fold's last.pt (exactly, on CPU with
    train.deterministic); --folds 0,1 trains a subset, and the run's oof.csv and CV cover every
    fold once all exist; --nproc N runs N DDP ranks through torchrun (gloo on CPU, nccl on GPUs).
    --parallel auto|N trains N folds at once, one process per GPU or per share of the CPU cores;
    --cluster runs each fold as a Ray task (docs/cluster.md); both resume killed folds.
    --name a,b,c (new runs, same config) or --runs (kit.toml's [[runs]] entries, each with its
    own overrides) trains a list of runs as one job set: with --parallel/--cluster every
    (run, fold) fills the slots; each run is assembled as if trained alone.

    \b
    Example:
      kit train -C competitions/digits --set train.epochs=3 --name quick
      kit train -C competitions/digits --name big --folds 0,1 --nproc 2
      kit train -C competitions/digits --resume big --folds 2,3,4
      kit train -C competitions/digits --skip-bad
      kit train -C competitions/digits --parallel auto --set train.threads=1
      kit train -C competitions/digits --cluster ray://head:10001 --name wide
      kit train -C competitions/digits --name s1,s2,s3 --parallel 2 --set train.threads=1
      kit train -C competitions/digits --runs --parallel auto
    """
    from kit.train.cv import train_run

    if (run or runs_table) and resume_run:
        raise KitError("give either --name (a new run) or --resume RUN (an existing one)")
    overrides = (*overrides, "data.skip_bad=true") if skip_bad else overrides
    if runs_table or (run and "," in run):
        from kit.train.jobset import split_names, train_runs

        results = train_runs(
            load(root, overrides),
            split_names(run),
            table=runs_table,
            folds=fold_list,
            progress=not quiet,
            nproc=nproc,
            parallel=parallel,
            cluster=cluster,
            echo=click.echo,
        )
        shown = [r.to_json() if as_json else render_train(r) for r in results]
        click.echo("[" + ",\n".join(shown) + "]" if as_json else "\n".join(shown))
        return
    result = train_run(
        load(root, overrides),
        resume_run or run,
        folds=fold_list,
        progress=not quiet,
        resume=bool(resume_run),
        nproc=nproc,
        parallel=parallel,
        cluster=cluster,
        echo=click.echo,
    )
    click.echo(result.to_json() if as_json else render_train(result))


@cli.group(name="runs", invoke_without_command=True)
@competition_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@click.option("--plot", is_flag=True, help="Write runs/cv_vs_lb.png and runs/index.html too.")
@click.pass_context
def runs_group(ctx, root, overrides, as_json, plot):
    """List the competition's runs: model, CV ± std, epochs, time, commit, folds, LB scores.

    --plot writes the CV-vs-leaderboard plot (runs/cv_vs_lb.png) and a runs overview page
    (runs/index.html) that links each run's report.

    \b
    Example:
      kit runs -C competitions/digits
      kit runs -C competitions/digits --plot
      kit runs show -C competitions/digits quick
    """
    ctx.obj = (root, overrides)
    if ctx.invoked_subcommand is not None:
        return
    from kit.ledger import format_runs_table, list_runs

    competition = load(root, overrides)
    table = list_runs(competition)
    if as_json:
        click.echo(table.to_json(orient="records", indent=2))
    elif table.empty:
        click.echo("no runs yet: kit train")
    else:
        click.echo(format_runs_table(table))
    if plot:
        from kit.report import write_runs_overview

        written = write_runs_overview(competition)
        click.echo(f"wrote {written['plot']} and {written['page']}")


@runs_group.command(name="show")
@click.option(
    "-C",
    "--competition",
    "show_root",
    type=click.Path(file_okay=False, path_type=Path),
    help="The competition folder (also accepted before `show`).",
)
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print every field as JSON instead.")
@click.pass_obj
def runs_show(obj, show_root, run, as_json):
    """Details of one run: scores per fold and class, TTA, submissions, report path.

    \b
    Example:
      kit runs show -C competitions/digits quick
      kit runs show -C competitions/digits quick --json
    """
    from kit.ledger import format_run, show_run

    root, overrides = obj
    details = show_run(load(show_root or root, overrides), run)
    click.echo(json.dumps(details, indent=2, default=str) if as_json else format_run(details))


@cli.command()
@competition_options
@click.argument("run")
@click.option(
    "--tta",
    help="Comma-separated views overriding predict.tta, e.g. identity,hflip; 'auto' keeps only "
    "the views of predict.tta that raise the OOF score ('auto,identity,hflip': among these).",
)
@click.option("--merge", type=click.Choice(choices(ViewMerge)), help="How views merge.")
@click.option("--fold-merge", type=click.Choice(choices(FoldMerge)), help="How folds merge.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--finished-folds", is_flag=True, help="Use an unfinished run's finished folds only.")
@prints_result(render_predict)
def predict(root, overrides, run, tta, merge, fold_merge, quiet, finished_folds):
    """Predict the test set with every fold of RUN and its TTA views -> runs/RUN/test.csv.

    \b
    Example:
      kit predict -C competitions/digits quick
      kit predict -C competitions/digits quick --tta auto,identity,hflip,shift:1,0
    """
    from kit.infer.predict import parse_tta_option, predict_run

    views, auto = parse_tta_option(tta)
    return predict_run(
        load(root, overrides),
        run,
        tta=views,
        auto=auto or None,
        merge=merge,
        fold_merge=fold_merge,
        progress=not quiet,
        finished_only=finished_folds,
    )


@cli.command()
@competition_options
@click.argument("runs", nargs=-1, required=True)
@click.option("--name", required=True, help="Submission name: submissions/NAME.csv.")
@click.option(
    "--method",
    type=click.Choice(choices(BlendMethod)),
    help="Blend (default ensemble.method); weights = non-negative weights fitted on OOF.",
)
@click.option(
    "--weights", callback=comma_numbers(float), help="Fixed weights, one per run, e.g. 0.7,0.3."
)
@click.option(
    "--decide/--no-decide",
    default=None,
    help="Tune offsets / cut-points / thresholds on OOF for the metric (default ensemble.decide).",
)
@click.option(
    "--finished-folds", is_flag=True, help="Blend unfinished runs from their finished folds."
)
@prints_result(render_blend)
def ensemble(root, overrides, runs, name, method, weights, decide, finished_folds):
    """Blend RUNS into a submission in the competition's format, with a card in blends/NAME/.

    \b
    Example:
      kit ensemble -C competitions/digits quick baseline --name blend1 --method weights --decide
    """
    from kit.infer.ensemble import ensemble_runs

    return ensemble_runs(
        load(root, overrides),
        list(runs),
        name,
        method=method,
        weights=weights,
        decide=decide,
        finished_only=finished_folds,
    )


@cli.command()
@competition_options
@click.argument("runs", nargs=-1, required=True)
@click.option("--name", required=True, help="Label set name: pseudo/NAME/labels.csv.")
@click.option(
    "--threshold",
    default=0.9,
    show_default=True,
    type=float,
    help="Keep test images whose top probability reaches this.",
)
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
    quantiles = "  ".join(f"{k} {v:.5f}" for k, v in result["confidence_quantiles"].items())
    click.echo(f"top-probability quantiles over the test images: {quantiles}")
    if result["warning"]:
        click.echo(f"Warning: {result['warning']}", err=True)
    click.echo(f"wrote {result['labels_csv']}")


@cli.command(name="lr-find")
@competition_options
@click.option("--fold", default=0, show_default=True, help="The fold whose training part is used.")
@click.option("--start", "start_lr", default=1e-7, show_default=True, help="First lr.")
@click.option("--end", "end_lr", default=10.0, show_default=True, help="Last lr, if reached.")
@click.option("--iters", "num_iter", default=100, show_default=True, help="Optimiser steps.")
@click.option(
    "--rule",
    type=click.Choice(["valley", "steepest"]),
    default="valley",
    show_default=True,
    help="valley: halfway along the longest falling stretch (fastai); steepest: fastest fall.",
)
@click.option("--write", is_flag=True, help="Put the suggested lr into kit.toml's [train] lr line.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def lr_find(root, overrides, fold, start_lr, end_lr, num_iter, rule, write, quiet):
    """Learning-rate range test on a fold with the run's recipe; plot and suggest train.lr.

    Writes runs/lr_find/lr_find.png and lr_find.json.

    \b
    Example:
      kit lr-find -C competitions/digits
      kit lr-find -C competitions/digits --rule steepest --write
    """
    from kit.workbench.lr_find import find_lr

    result = find_lr(
        load(root, overrides),
        fold=fold,
        start_lr=start_lr,
        end_lr=end_lr,
        num_iter=num_iter,
        rule=rule,
        write=write,
        progress=not quiet,
    )
    click.echo(
        f"{result['steps']} steps ({result['stopped']}): suggested train.lr "
        f"{result['suggested_lr']:g} ({rule}; valley {result['valley']:g}, "
        f"steepest {result['steepest']:g}; "
        f"kit.toml has {result['current_lr']:g})"
    )
    click.echo(f"wrote {result['png']} and {result['json']}")
    if result.get("written"):
        click.echo(f"wrote {result['written']}")


@cli.command()
@competition_options
@click.argument("name")
@click.option("--trials", type=click.IntRange(min=1), help="Trials the study holds (sweep.trials).")
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds; no new trial after.")
@click.option("--folds", "first_folds", type=click.IntRange(min=0), help="First K folds per trial.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@parallel_option("Trials' folds N at once (a process each).")
@click.option("--cluster", metavar="ray://HOST:PORT|auto|local", help="Trials' folds as Ray tasks.")
def sweep(root, overrides, name, trials, timeout, first_folds, quiet, parallel, cluster):
    """Optuna sweep over [sweep] params: each trial a k-fold run scored on OOF, pruned per fold.

    The study is runs/sweeps/NAME/study.db: run the command again to resume it, or in several
    processes to share it. Each finished trial is the run NAME-tNNN in the ledger.
    --parallel / --cluster run the trials' folds on kit train's scheduler, as many trials at
    once as fill its slots (docs/cluster.md says what that changes for TPE and pruning).

    \b
    Example:
      kit sweep -C competitions/digits s1 --trials 20 --timeout 3600 --folds 2
      kit sweep -C competitions/digits s2 --trials 8 --folds 2 --parallel 2 --set train.threads=1
    """
    from kit.workbench.sweep import run_sweep

    result = run_sweep(
        load(root, overrides),
        name,
        trials=trials,
        timeout=timeout,
        folds=first_folds,
        progress=not quiet,
        parallel=parallel,
        cluster=cluster,
    )
    counts = result["counts"]
    click.echo(
        f"sweep {name}: {counts['complete']} finished, {counts['pruned']} pruned, "
        f"{counts['fail']} failed trials over folds {result['folds']}"
    )
    best = result["best"]
    if best:
        values = " ".join(f"--set {key}={value!r}" for key, value in best["params"].items())
        click.echo(f"best: run {best['run']} OOF {result['metric']} {best['value']:.5f} ({values})")
    click.echo(f"wrote {Path(result['storage']).parent / 'summary.json'}")


@cli.command()
@competition_options
@click.argument("run")
@click.option("--onnx", "as_onnx", is_flag=True, required=True, help="Export as ONNX (required).")
@click.option("--per-fold", is_flag=True, help="One file per fold instead of the ensemble graph.")
@click.option(
    "--folds", "fold_list", callback=comma_numbers(int), help="Only these folds, e.g. 0,1."
)
@click.option("--opset", type=click.IntRange(min=7), help="ONNX opset (default: the exporter's).")
def export(root, overrides, run, as_onnx, per_fold, fold_list, opset):
    """Export RUN's models as ONNX (fold ensemble as one graph), checked against PyTorch.

    Input `image`: float32 (N, 3, H, W) RGB in [0, 1]; output `probs`: the p_<class> columns.

    \b
    Example:
      kit export -C competitions/digits r1 --onnx
      kit export -C competitions/digits r1 --onnx --per-fold
    """
    from kit.workbench.export import export_onnx

    export_onnx(load(root, overrides), run, per_fold=per_fold, folds=fold_list, opset=opset)


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
@json_option
def submit(root, overrides, file, message, wait, runs, kernel, version, as_json):
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
        competition,
        file,
        message,
        wait=wait,
        runs=list(runs) or None,
        kernel=kernel,
        version=version,
    )
    click.echo(result.to_json() if as_json else render_submit(result, kernel or file))


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


@cli.group()
def bench():
    """Measure parts of the pipeline on this machine.

    \b
    Example:
      kit bench data -C competitions/digits
    """


@bench.command(name="data")
@competition_options
@click.option(
    "--workers",
    callback=comma_numbers(int),
    help="num_workers to time, e.g. 0,1,2 (default: 0,1,2,4.. to cores).",
)
@click.option(
    "--batch-sizes",
    callback=comma_numbers(int),
    help="Batch sizes to time, e.g. 32,64 (default: half and train's).",
)
@click.option(
    "--batches",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Batches timed per setting.",
)
@click.option("--write", is_flag=True, help='Keep the measurement for num_workers = "auto".')
def bench_data_command(root, overrides, workers, batch_sizes, batches, write):
    """Time decode, augmentation, collate and the DataLoader; recommend num_workers.

    With --write the recommendation is kept per machine (KIT_HOME) for train.num_workers = "auto";
    a kit.toml that pins a number gets the measured one instead. Run it again to re-measure.

    \b
    Example:
      kit bench data -C competitions/digits --write
      kit bench data -C competitions/digits --workers 0,1,2 --batch-sizes 32,64
    """
    from kit.data.bench import bench_data, format_table

    result = bench_data(
        load(root, overrides),
        workers=workers,
        batch_sizes=batch_sizes,
        batches=batches,
        write=write,
    )
    click.echo(format_table(result))


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
@click.option("--json", "as_json", is_flag=True, help="End with the summary as JSON.")
def run_command(root, overrides, run, message, no_submit, quiet, as_json):
    """Every stage in order: download, folds, train, predict, ensemble, validate, submit.

    Progress shows each epoch and the run's ETA; it ends with a short summary (--json: as JSON).

    \b
    Example:
      kit run -C competitions/digits
      kit run -C competitions/digits --no-submit --json
    """
    from kit.pipeline import format_summary, run_all

    summary = run_all(
        load(root, overrides),
        run=run,
        message=message,
        submit=not no_submit,
        progress=not quiet,
        echo=click.echo,
    )
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


def host_db_option(func):
    """--db for every `kit host` command: a PostgreSQL URL (default: HOSTDIR/host.sqlite)."""
    return click.option(
        "--db",
        envvar="KIT_HOST_DB",
        metavar="URL",
        help="postgresql://USER@HOST/DB (default: the one init used, else HOSTDIR/host.sqlite).",
    )(func)


HOSTDIR = click.Path(file_okay=False, path_type=Path)


def host_command(group, name: str):
    """A `kit host` subcommand: HOSTDIR first, then its own arguments and options, and --db."""

    def decorate(func):
        func = click.argument("hostdir", type=HOSTDIR)(host_db_option(func))
        return group.command(name=name)(func)

    return decorate


@cli.group()
def host():
    """Host a competition: web pages, a JSON API, team tokens and a private leaderboard.

    \b
    Example, the host's loop:
      kit host init class-host --from competitions/digits
      kit host team import class-host roster.csv --out tokens.csv
      kit host serve class-host --bind 0.0.0.0 --port 8800
      kit host freeze class-host && kit host reveal class-host
      kit host export class-host --out standings.csv
    """


@host_command(host, "init")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The kit competition folder (kit.toml, README.md, data/).",
)
@click.option(
    "--solution",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Answer key CSV: id, target column(s), Usage = Public/Private.",
)
@click.option("--split", is_flag=True, help="Make a seeded, label-stratified Public/Private split.")
@click.option("--seed", default=0, show_default=True, help="Seed of --split.")
@click.option("--daily-limit", type=click.IntRange(min=1), help="Default: competition.daily_limit.")
@click.option(
    "--finals",
    type=click.IntRange(min=1),
    help="Final selections per team (default: 2, as on Kaggle).",
)
@click.option("--team-size", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--start", default="", help="UTC start, e.g. 2026-12-01T09:00.")
@click.option("--end", default="", help="UTC end; submissions close then, e.g. 2026-12-08T17:00.")
def host_init(hostdir, source, **settings):  # settings: init_host's keywords, by name
    """Make a hosted competition in HOSTDIR from a kit competition folder; print the host token.

    \b
    Example:
      kit host init class-host --from competitions/digits
      kit host init class-host --from competitions/cells --solution solution.csv
    """
    from kit.host.admin import init_host

    result = init_host(hostdir, source, **settings)
    click.echo(
        f"{result['hostdir']}: {result['public_rows']} public and "
        f"{result['private_rows']} private rows in {result['database']}"
    )
    click.echo(
        f"host token (shown once; log in with it for the host pages): {result['host_token']}"
    )
    click.echo(f"edit the pages in {result['hostdir']}/pages/*.md, then: kit host serve {hostdir}")


@host.group(name="team")
def host_team():
    """Add, import, revoke or rotate team tokens (each shown once; stored hashed).

    \b
    Example:
      kit host team add class-host "team rocket" --member ada@example.org
    """


@host_command(host_team, "add")
@click.argument("name")
@click.option("--member", "members", multiple=True, metavar="EMAIL", help="A member (repeat).")
def host_team_add(hostdir, name, members, db):
    """Make team NAME and print its token, once.

    \b
    Example:
      kit host team add class-host "team rocket" --member ada@example.org --member bo@example.org
    """
    from kit.host.admin import add_team

    click.echo(add_team(hostdir, name, list(members), db=db))


@host_command(host_team, "import")
@click.argument("roster", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--out",
    default="tokens.csv",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the team,token CSV goes (mode 0600).",
)
def host_team_import(hostdir, roster, out, db):
    """Make a team per name in ROSTER (columns team, email) and write their tokens to --out.

    \b
    Example:
      kit host team import class-host roster.csv --out tokens.csv
    """
    from kit.host.admin import import_teams

    click.echo(f"{import_teams(hostdir, roster, out, db=db)} team(s); tokens in {out}")


@host_command(host_team, "revoke")
@click.argument("name")
def host_team_revoke(hostdir, name, db):
    """Stop NAME's token (and its sessions) from working; its submissions stay.

    \b
    Example:
      kit host team revoke class-host "team rocket"
    """
    from kit.host.admin import revoke_team

    revoke_team(hostdir, name, db=db)
    click.echo(f"{name}: token revoked")


@host_command(host_team, "rotate")
@click.argument("name")
def host_team_rotate(hostdir, name, db):
    """Give NAME a new token (printed once); the old one and its sessions stop working.

    \b
    Example:
      kit host team rotate class-host "team rocket"
    """
    from kit.host.admin import rotate_team

    click.echo(rotate_team(hostdir, name, db=db))


@host_command(host, "baseline")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", default="baseline", show_default=True, help="The row's name on the board.")
@click.option("-m", "--message", default="", help="Describe the baseline.")
def host_baseline(hostdir, file, name, message, db):
    """Score FILE as a host baseline: a marked row on the leaderboard, outside any limit.

    \b
    Example:
      kit host baseline class-host submissions/r1.csv --name "resnet baseline"
    """
    from kit.host.admin import add_baseline

    row = add_baseline(hostdir, file, name=name, message=message, db=db)
    click.echo(f"{name}: public {row['public_score']:.5f}")


@host_command(host, "serve")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8800, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Server processes (use --db postgresql://... for more than one).",
)
def host_serve(hostdir, bind, port, workers, db):
    """Serve the web pages and the JSON API until Ctrl-C.

    \b
    Example:
      kit host serve class-host --bind 0.0.0.0 --port 8800
    """
    from kit.host.app import serve

    click.echo(f"serving {hostdir} on http://{bind}:{port} (Ctrl-C stops)")
    serve(hostdir, bind=bind, port=port, db=db, workers=workers)


@host_command(host, "freeze")
@click.option("--reopen", is_flag=True, help="Open submissions again instead.")
def host_freeze(hostdir, reopen, db):
    """Stop submissions (the boards stay public-only until `kit host reveal`).

    \b
    Example:
      kit host freeze class-host
    """
    from kit.host.admin import set_state

    click.echo(f"competition {set_state(hostdir, 'open' if reopen else 'frozen', db=db)}")


@host_command(host, "reveal")
def host_reveal(hostdir, db):
    """Reveal the private leaderboard to everyone (submissions stay closed).

    \b
    Example:
      kit host reveal class-host
    """
    from kit.host.admin import set_state

    click.echo(f"competition {set_state(hostdir, 'revealed', db=db)}")


@host_command(host, "rescore")
@click.option(
    "--solution",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A corrected answer key (id, target, Usage) to store first.",
)
def host_rescore(hostdir, solution, db):
    """Score every submission again, after the host fixed the answer key.

    \b
    Example:
      kit host rescore class-host --solution fixed_solution.csv
    """
    from kit.host.admin import rescore

    click.echo(f"{rescore(hostdir, solution=solution, db=db)} submission(s) rescored")


@host_command(host, "export")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: HOSTDIR/standings.csv."
)
def host_export(hostdir, out, db):
    """Write the final standings as CSV for grading (each team's finals, else its best public).

    \b
    Example:
      kit host export class-host --out standings.csv
    """
    from kit.host.admin import export

    click.echo(f"standings written to {export(hostdir, out, db=db)}")


@host.command(name="demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo lives (default: $KIT_HOME/host-demo).",
)
@click.option("--port", default=8800, show_default=True, type=click.IntRange(1, 65535))
def host_demo(folder, port):
    """Serve the digits competition with three teams and a baseline on 127.0.0.1.

    \b
    Example:
      kit host demo --port 8800
    """
    from kit.fileio import kit_home
    from kit.host.admin import make_demo
    from kit.host.app import serve

    demo = make_demo(folder or kit_home() / "host-demo")
    for team, token in demo["tokens"].items():
        click.echo(f"{team:8} {token}")
    click.echo(f"participants: kit login http://127.0.0.1:{port}  (with a team token above)")
    click.echo(f"serving on http://127.0.0.1:{port} (Ctrl-C stops)")
    serve(Path(demo["hostdir"]), bind="127.0.0.1", port=port)


@cli.command(name="login")
@click.argument("url")
@click.option("--token", envvar="KIT_HOST_TOKEN", help="The team token (default: prompt, hidden).")
def login_command(url, token):
    """Keep your team's token for a `kit host` server (in $KIT_HOME, mode 0600).

    \b
    Example:
      kit login http://10.0.0.5:8800
    """
    from kit.platforms.host import login

    token = token or click.prompt("team token", hide_input=True)
    click.echo(f"logged in to {url} as team {login(url, token)['team']}")


@cli.command()
@competition_options
@click.argument("ids", nargs=-1, required=True, type=int)
def finals(root, overrides, ids):
    """Choose your final submissions on a `kit host` competition (they decide the private rank).

    \b
    Example:
      kit finals -C competitions/digits 12 17
    """
    from kit.platforms.host import HostClient

    competition = load(root, overrides)
    if competition.config.competition.platform != "host":
        raise KitError('kit finals is for competition.platform = "host" folders')
    chosen = HostClient.for_competition(competition).finals(list(ids))
    click.echo(f"final selections: {', '.join(map(str, chosen))}")


def main() -> None:
    cli(prog_name="kit")
