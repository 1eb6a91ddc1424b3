"""Offline Kaggle kernels for code competitions: build, run locally as Kaggle would, push.

`build_kernel` writes kernels/<slug>/:

    inference.py            the kernel (templates/kernel/inference.py.tmpl)
    kernel-metadata.json    enable_internet false, written explicitly (the client's default is true)
    dataset/                what the kernel reads from /kaggle/input/<dataset-slug>/:
      dataset-metadata.json
      kit-kernel.json       the run, the competition slug, and where each file goes
      kit-<version>-py3-none-any.whl, extra wheels (kernel.extra_wheels)
      config.toml, run.json, metrics.json, oof.csv, ... (the run's top-level files)
      fold<k>.pt            each fold's best weights
      folds.csv

The kernel does not carry its own inference code: it installs the kit wheel and calls
`predict_in_kernel`, which runs `predict_run` and `ensemble_runs` on the run, as `kit predict`
and `kit ensemble` do. What the kernel submits therefore equals what those commands give, and
`run_local` checks it. The price is OOF inference inside the kernel (which `predict.auto` view
selection needs anyway).

Credentials never enter the package: every file (wheel members included) is scanned for the
key of the environment and of kaggle.json before the package is moved into place.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

import kit
from kit.competition import KERNEL_MARKER, Competition
from kit.config import CONFIG_NAME, dump_toml, load_config
from kit.errors import ConfigError, KitError
from kit.fileio import write_json, write_text
from kit.infer.ensemble import ensemble_runs
from kit.infer.predict import predict_run
from kit.platforms import kaggle_kernels as kaggle
from kit.platforms.kaggle import competition_slug
from kit.platforms.kaggle_client import credentials_file
from kit.run import LOG_NAME, OOF_TTA_NAME, TEST_NAME, Run
from kit.scaffold import templates_dir

SCRIPT = "inference.py"
# Files of the run folder the kernel needs no copy of: it writes them itself, or never reads them.
SKIPPED_RUN_FILES = {LOG_NAME, TEST_NAME, OOF_TTA_NAME}
# Data paths of kit.toml that the kernel must find under the competition's input folder.
DATA_PATHS = ("train_csv", "train_dir", "test_dir", "sample_submission")
DATA_PREFIX = "data/"
MAX_SLUG = 50  # Kaggle's limit for dataset slugs and titles
LICENSE = "CC0-1.0"  # the dataset holds your own weights; private unless you make it public


class KernelError(KitError):
    """A kernel could not be built, run or pushed; the message says what to do."""


# ------------------------------------------------------------------------------ names
def _slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:MAX_SLUG].rstrip("-")


def kernel_slug(competition: Competition, run: str) -> str:
    """kernel.slug, or <competition>-<run> made a Kaggle slug."""
    slug = competition.config.kernel.slug or _slugify(f"{competition.name}-{run}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{4,49}", slug):
        raise ConfigError(
            f"kernel.slug {slug!r} is not a Kaggle slug: 5-50 lowercase letters, digits and '-'"
        )
    return slug


def kernel_dir(competition: Competition, slug: str) -> Path:
    return competition.kernels_dir / slug


def kaggle_owner(configured: str = "") -> str:
    """kernel.owner, else the username of the Kaggle credentials (never the key)."""
    if configured:
        return configured
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]

    with contextlib.suppress(OSError, ValueError, AttributeError):
        username = json.loads(credentials_file().read_text()).get("username")
        if username:
            return str(username)
    raise ConfigError(
        "the kernel needs a Kaggle owner: set kernel.owner in kit.toml "
        "(or KAGGLE_USERNAME, or a kaggle.json with your username)"
    )


# ------------------------------------------------------------------------------ secrets
def known_secrets() -> list[str]:
    """The Kaggle keys this process could leak: environment and kaggle.json."""
    secrets = [os.environ.get(name, "") for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]

    with contextlib.suppress(OSError, ValueError, AttributeError):
        secrets.append(str(json.loads(credentials_file().read_text()).get("key") or ""))
    forms = []
    for secret in {s for s in secrets if len(s) >= 8}:  # shorter would match by chance
        forms.append(secret)
        username = os.environ.get("KAGGLE_USERNAME", "")
        if username:  # the Basic auth header the client sends
            forms.append(base64.b64encode(f"{username}:{secret}".encode()).decode())
    return forms


def _stream_contains(stream, needles: list[bytes], chunk: int = 1 << 20) -> bool:
    """True when the stream holds one of needles; reads in chunks (weights can be large)."""
    overlap = max(len(n) for n in needles) - 1
    tail = b""
    while block := stream.read(chunk):
        window = tail + block
        if any(needle in window for needle in needles):
            return True
        tail = window[-overlap:] if overlap else b""
    return False


def find_secrets(folder: Path, secrets: list[str]) -> list[str]:
    """Files under folder (and members of zips/wheels) that contain one of secrets."""
    needles = [s.encode() for s in secrets if s]
    if not needles:
        return []
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        with open(path, "rb") as stream:
            if _stream_contains(stream, needles):
                found.append(str(path))
        if zipfile.is_zipfile(path):  # a compressed member would hide the key from the scan
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    with archive.open(member) as stream:
                        if _stream_contains(stream, needles):
                            found.append(f"{path}!{member}")
    return found


# ------------------------------------------------------------------------------ wheels
def _kit_sources() -> tuple[Path, Path, str]:
    """(package folder, templates folder, version) of the running kit."""
    package = Path(kit.__file__).parent
    return package, templates_dir(), kit.__version__


def build_kit_wheel(dest: Path) -> Path:
    """Write kit's own pure-Python wheel into dest, offline, from the running kit's files.

    The wheel is written directly (files, METADATA, WHEEL, RECORD), so it needs neither the
    network nor a build backend; templates go in as kit/templates, as in pyproject.toml.
    Dependencies are not declared: the kernel installs with --no-deps over Kaggle's image.
    """
    package, templates, version = _kit_sources()
    dist_info = f"kit-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        wanted = "__pycache__" not in relative.parts and path.suffix != ".pyc"
        # A wheel-installed kit carries its templates inside; they are added once, below.
        if path.is_file() and wanted and relative.parts[0] != "templates":
            files[f"kit/{relative.as_posix()}"] = path.read_bytes()
    for path in sorted(templates.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[f"kit/templates/{path.relative_to(templates).as_posix()}"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: kit\nVersion: {version}\n"
        "Summary: A Kaggle-style offline competition kit for image classification\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: kit.kernel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = Path(dest) / f"kit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, content in files.items():
            wheel.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), content)
    return path


def download_wheels(requirements: list[str], dest: Path) -> list[Path]:
    """Wheels of requirements (no dependencies) from the package index, into dest."""
    if not requirements:
        return []
    before = set(Path(dest).glob("*.whl"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
            str(dest),
            *requirements,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[-300:]
        raise KernelError(
            f"kernel.extra_wheels {requirements}: pip could not download them ({detail}); "
            "check the names and the package index"
        )
    return sorted(set(Path(dest).glob("*.whl")) - before)


# ------------------------------------------------------------------------------ build
def _render(template: str, values: dict[str, str]) -> str:
    text = (templates_dir() / "kernel" / template).read_text()
    return string.Template(text).substitute(values)


def _check_data_paths(config) -> None:
    for name in DATA_PATHS:
        value = getattr(config.data, name)
        if not value.startswith(DATA_PREFIX):
            raise ConfigError(
                f"data.{name} = {value!r} lies outside data/: a kernel finds only what "
                "`kit download` puts in data/ (Kaggle mounts it as the competition's input)"
            )


def _replace_folder(staged: Path, target: Path) -> None:
    """Move staged to target; an older target is parked, then removed."""
    if target.exists():
        parked = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, parked / target.name)
        os.replace(staged, target)
        shutil.rmtree(parked, ignore_errors=True)
    else:
        os.replace(staged, target)


def build_kernel(competition: Competition, run: str) -> dict:
    """Write kernels/<slug>/ for run: the script, its metadata and its dataset folder."""
    opened = competition.run(run)
    run_dir = opened.dir
    folds = [opened.fold(k) for k in opened.finished_folds()]
    if not folds:
        raise KernelError(f"run '{run}' has no finished fold in {run_dir}: train it first")
    if not competition.folds_csv.exists():
        raise KernelError(f"{competition.folds_csv} not found: the kernel needs the run's folds")
    _check_data_paths(opened.config)
    _check_data_paths(competition.config)
    settings = competition.config.kernel
    owner = kaggle_owner(settings.owner)
    slug = kernel_slug(competition, run)
    dataset_slug = _slugify(f"{slug[: MAX_SLUG - 5]}-data")
    comp_slug = competition_slug(competition)
    target = kernel_dir(competition, slug)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{slug}.new-"))
    try:
        dataset = staged / "dataset"
        dataset.mkdir()
        # kit.toml: the competition's resolved config (ensemble and decision settings);
        # config.toml: the run's own, which predict follows.
        layout = {"kit.toml": "kit.toml", "folds.csv": "folds.csv"}
        write_text(dataset / "kit.toml", dump_toml(competition.config.to_dict()))
        shutil.copyfile(competition.folds_csv, dataset / "folds.csv")
        for path in sorted(run_dir.iterdir()):
            if path.is_file() and path.name not in SKIPPED_RUN_FILES:
                shutil.copyfile(path, dataset / path.name)
                layout[path.name] = f"runs/{run}/{path.name}"
        for fold in folds:  # the weights, and result.json: predict uses finished folds only
            for source, name in (
                (fold.best, f"{fold.dir.name}.pt"),
                (fold.result_path, f"{fold.dir.name}.json"),
            ):
                shutil.copyfile(source, dataset / name)
                layout[name] = source.relative_to(competition.root).as_posix()
        wheels = [build_kit_wheel(dataset), *download_wheels(settings.extra_wheels, dataset)]
        write_json(
            dataset / KERNEL_MARKER,
            {
                "run": run,
                "competition": comp_slug,
                "layout": layout,
                "wheels": [w.name for w in wheels],
            },
        )
        write_json(
            dataset / "dataset-metadata.json",
            {
                "title": dataset_slug,
                "id": f"{owner}/{dataset_slug}",
                "licenses": [{"name": LICENSE}],
            },
        )
        values = {
            "competition": comp_slug,
            "run": run,
            "marker": KERNEL_MARKER,
            "dataset_slug": dataset_slug,
            "dataset_ref": f"{owner}/{dataset_slug}",
            "competition_slug": comp_slug,
        }
        write_text(staged / SCRIPT, _render("inference.py.tmpl", values))
        write_json(
            staged / "kernel-metadata.json",
            {
                "id": f"{owner}/{slug}",
                "title": slug,  # the title must slugify to the id's slug
                "code_file": SCRIPT,
                "language": "python",
                "kernel_type": "script",
                "is_private": True,
                "enable_gpu": settings.gpu,
                "enable_tpu": False,
                "enable_internet": False,  # the client's default is true: always write it
                "dataset_sources": [f"{owner}/{dataset_slug}"],
                "competition_sources": [comp_slug],
                "kernel_sources": [],
                "model_sources": [],
            },
        )
        leaks = find_secrets(staged, known_secrets())
        if leaks:
            raise KernelError(
                f"the kernel package would contain your Kaggle key (in {', '.join(leaks)}); "
                "remove it from those files and build again"
            )
        _replace_folder(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return {
        "kernel_dir": str(target),
        "kernel": f"{owner}/{slug}",
        "dataset": f"{owner}/{dataset_slug}",
        "competition": comp_slug,
        "files": sorted(p.name for p in (target / "dataset").iterdir()),
    }


# ------------------------------------------------------------------------------ inside the kernel
def kernel_config_text(config_path: Path, competition_input: Path) -> str:
    """The run's config with data paths moved under competition_input; no local weights file."""
    config = load_config(config_path)
    for name, value in vars(config.data).items():
        if isinstance(value, str) and value.startswith(DATA_PREFIX):
            setattr(config.data, name, str(competition_input / value[len(DATA_PREFIX) :]))
    # The folds' weights replace the pretrained ones, and the file is not in the kernel.
    config.model.pretrained_file = ""
    return dump_toml(config.to_dict())


def predict_in_kernel(dataset: Path, competition_input: Path, working: Path) -> Path:
    """Lay out the run under working/kit, predict as `kit predict` + `kit ensemble` do, and
    write working/submission.csv; return its path."""
    dataset, working = Path(dataset), Path(working)
    info = json.loads((dataset / KERNEL_MARKER).read_text())
    root = working / "kit"
    for name, relative in info["layout"].items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".pt"):
            with contextlib.suppress(FileExistsError):
                target.symlink_to(dataset / name)  # weights stay on the read-only input
        else:
            shutil.copyfile(dataset / name, target)
    for config in (root / CONFIG_NAME, Run(Competition.load(root), info["run"]).config_path):
        write_text(config, kernel_config_text(config, Path(competition_input)))
    competition = Competition.load(root)
    predict_run(competition, info["run"], progress=False)
    result = ensemble_runs(competition, [info["run"]], "submission")
    out = working / "submission.csv"
    shutil.copyfile(result["submission"], out)
    return out


# ------------------------------------------------------------------------------ run locally
def network_isolation() -> list[str] | None:
    """The command prefix that takes the network away (unshare -n), or None where unavailable."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True)
    return [unshare, "-n"] if probe.returncode == 0 else None


def _clean_environment(input_dir: Path, working: Path, libs: Path) -> dict[str, str]:
    """The environment a kernel sees: no Kaggle credentials, no proxies, kit's own paths."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KAGGLE_") and "proxy" not in key.lower()
    }
    env.update(
        KIT_KAGGLE_INPUT=str(input_dir),
        KIT_KAGGLE_WORKING=str(working),
        KIT_KERNEL_LIBS=str(libs),
        NO_ALBUMENTATIONS_UPDATE="1",
        PIP_NO_INDEX="1",
        PYTHONNOUSERSITE="1",
    )
    # A dead proxy as a second fence where unshare is missing: requests and urllib give up.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = "http://127.0.0.1:9"
    return env


def run_local(
    competition: Competition, run: str, *, timeout: float = 3600, require_isolation: bool = False
) -> dict:
    """Run kernels/<slug>/inference.py as Kaggle would; compare its submission with kit's.

    Inputs are laid out as /kaggle/input/<competition-slug> (the competition's data/) and
    /kaggle/input/<dataset-slug> under kernels/<slug>/local/, output goes to .../working, and
    the script runs in a network namespace with no interfaces (unshare -n) where the system
    allows it. The expected submission is what `kit ensemble RUN` makes of runs/RUN/test.csv
    (`kit predict RUN` first); the two must agree row for row.
    """
    slug = kernel_slug(competition, run)
    folder = kernel_dir(competition, slug)
    metadata_path = folder / "kernel-metadata.json"
    if not metadata_path.exists():
        raise KernelError(f"{folder} has no kernel: run `kit kernel build {run}` first")
    if not competition.run(run).has_predictions:
        raise KernelError(
            f"runs/{run}/test.csv not found: run `kit predict {run}` first, so that the "
            "kernel's submission has something to be checked against"
        )
    metadata = json.loads(metadata_path.read_text())
    dataset_slug = metadata["dataset_sources"][0].split("/", 1)[1]
    local = folder / "local"
    shutil.rmtree(local, ignore_errors=True)
    input_dir, working = local / "input", local / "working"
    input_dir.mkdir(parents=True)
    working.mkdir()
    if not competition.data_dir.is_dir():
        raise KernelError(f"{competition.data_dir} not found: run `kit download` first")
    (input_dir / metadata["competition_sources"][0]).symlink_to(competition.data_dir.resolve())
    (input_dir / dataset_slug).symlink_to((folder / "dataset").resolve())
    prefix = network_isolation()
    if prefix is None and require_isolation:
        raise KernelError(
            "cannot take the network away from the kernel here (`unshare -n` needs root or user "
            "namespaces): run as root, or drop the isolation requirement"
        )
    env = _clean_environment(input_dir, working, local / "libs")
    try:
        done = subprocess.run(
            [*(prefix or []), sys.executable, str(folder / SCRIPT)],
            cwd=working,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise KernelError(f"the kernel ran past {timeout:g} s; see {folder / SCRIPT}") from error
    (local / "kernel.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        last = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])[:300]
        raise KernelError(
            f"the kernel failed (exit {done.returncode}): {last}; full log: {local / 'kernel.log'}"
        )
    produced = working / "submission.csv"
    if not produced.exists():
        raise KernelError(f"the kernel wrote no {produced}; full log: {local / 'kernel.log'}")
    expected = Path(ensemble_runs(competition, [run], f"kernel-check-{slug}")["submission"])
    differing = rows_differing(produced, expected)
    return {
        "kernel_dir": str(folder),
        "submission": str(produced),
        "expected": str(expected),
        "matches": differing == 0,
        "rows_differing": differing,
        "isolated": prefix is not None,
        "log": str(local / "kernel.log"),
    }


def rows_differing(produced: Path, expected: Path) -> int:
    """Rows where two submission files differ, compared as text (all rows if shapes differ)."""
    ours = pd.read_csv(produced, dtype=str, keep_default_na=False)
    theirs = pd.read_csv(expected, dtype=str, keep_default_na=False)
    if ours.shape != theirs.shape or list(ours.columns) != list(theirs.columns):
        return max(len(ours), len(theirs), 1)
    return int((ours.to_numpy() != theirs.to_numpy()).any(axis=1).sum())


# ------------------------------------------------------------------------------ push
def push_kernel(competition: Competition, run: str, *, notes: str = "") -> dict:
    """Create or version the kernel's dataset, then push the kernel, through the client."""
    folder = kernel_dir(competition, kernel_slug(competition, run))
    if not (folder / "kernel-metadata.json").exists():
        raise KernelError(f"{folder} has no kernel: run `kit kernel build {run}` first")
    dataset = kaggle.push_dataset(folder / "dataset", notes or f"kit run {run}")
    kernel = kaggle.push_kernel(folder)
    return {"dataset": dataset, "kernel": kernel}
