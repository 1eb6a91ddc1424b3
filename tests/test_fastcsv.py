"""The fixed-precision probability writer and the validator's numeric fast path (issue 11)."""

import numpy as np
import pandas as pd
import pytest

import kit.submission as submission
from kit.fastcsv import (
    PROBABILITY_TOLERANCE,
    probability_bytes,
    write_probabilities,
)
from kit.submission import validate_submission


def write_probabilities_csv(path, frame):
    with open(path, "w") as handle:
        assert write_probabilities(handle, frame)
    return path


def texts(values) -> list[str]:
    return [bytes(row[row != 0]).decode() for row in probability_bytes(np.asarray(values))]


EDGES = [0.0, 1.0, 0.5, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 9.9999996e-5, 9.99999949e-5, 0.99999995,
         0.9999999949, np.nextafter(1.0, 0.0), 1e-100, 1.5e-101, 5e-324, 2.2250738585072014e-308,
         0.123456789, 0.1000000499, 0.25, 1 / 3, 2 / 3, 0.0999999951, 1.23e-45]  # fmt: skip


def test_probabilities_round_trip_within_the_documented_tolerance():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        EDGES,
        rng.random(50_000),
        rng.dirichlet(np.ones(10), 5_000).ravel().astype(np.float32),
        10.0 ** rng.uniform(-320, 0, 20_000),
    ])  # fmt: skip
    written = texts(values)
    back = np.array([float(t) for t in written])
    relative = np.abs(back - values) / np.where(values > 0, values, 1.0)
    assert relative.max() <= PROBABILITY_TOLERANCE
    assert (back[values == 0] == 0).all() and (back[values == 1] == 1).all()
    # C's %.7g, except where the float product lands on a half-way point (a handful, if any)
    differ = [(v, t) for v, t in zip(values, written, strict=True) if t != f"{v:.7g}"]
    assert len(differ) <= len(values) * 1e-4, differ[:5]
    assert all(len(t) <= 13 for t in written)


@pytest.mark.parametrize("value, text", [
    (0.0, "0"), (1.0, "1"), (0.5, "0.5"), (0.25, "0.25"), (1e-4, "0.0001"), (1e-5, "1e-05"),
    (0.123456789, "0.1234568"), (1.5e-101, "1.5e-101"), (9.9999996e-5, "0.0001"),
    (np.nextafter(1.0, 0.0), "1"), (0.0012, "0.0012"), (1 / 3, "0.3333333"),
])  # fmt: skip
def test_probability_texts_follow_percent_g(value, text):
    assert texts([value]) == [text]


def frame_of(rows: int, ids=None) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    values = rng.dirichlet(np.ones(3), rows)
    ids = [f"im{i}" for i in range(rows)] if ids is None else ids
    return pd.DataFrame({"id": pd.Series(ids, dtype=str), **{c: values[:, k] for k, c in
                         enumerate(["cat", "dog", "ünï"])}})  # fmt: skip


def test_the_writer_writes_what_pandas_reads_back(tmp_path):
    frame = frame_of(150_000, [f"é{i}" if i % 7 == 0 else f" s{i}" for i in range(150_000)])
    frame.insert(1, "fold", np.arange(len(frame)) % 5)
    path = write_probabilities_csv(tmp_path / "out.csv", frame)
    text = path.read_text()
    assert text.splitlines()[0] == frame.head(0).to_csv(index=False).strip()
    back = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    assert back["id"].tolist() == frame["id"].tolist()
    assert (back["fold"] == frame["fold"]).all()
    floats = frame[["cat", "dog", "ünï"]].to_numpy()
    assert np.abs(back[["cat", "dog", "ünï"]].to_numpy() - floats).max() <= (
        PROBABILITY_TOLERANCE * floats.max()
    )


@pytest.mark.parametrize("change", ["quote", "comma", "newline", "nan id", "nan value",
                                    "above 1", "negative", "object", "nul"])  # fmt: skip
def test_what_the_writer_cannot_write_exactly_is_left_to_pandas(tmp_path, change):
    frame = frame_of(5)
    if change in ("quote", "comma", "newline", "nul"):
        frame.loc[2, "id"] = {"quote": 'a"b', "comma": "a,b", "newline": "a\nb", "nul": "a\x00"}[
            change
        ]
    elif change == "nan id":
        frame.loc[2, "id"] = None
    elif change == "nan value":
        frame.loc[2, "cat"] = np.nan
    elif change == "above 1":
        frame.loc[2, "cat"] = 1.5
    elif change == "negative":
        frame.loc[2, "cat"] = -1e-9
    else:
        frame["extra"] = [object()] * len(frame)
    with open(tmp_path / "out.csv", "w") as handle:
        assert not write_probabilities(handle, frame)
    assert (tmp_path / "out.csv").read_text() == ""


SAMPLE = "id,a,b\nx,0.5,0.5\ny,0.5,0.5\nz,0.5,0.5\n"
BODIES = [
    "id,a,b\nx,0.1,0.9\ny,1,0\nz,0,1e-05\n",  # valid
    "id,a,b\nx,0.1,0.9\ny, 0.5 ,0.5\nz,+.5,5e-1\n",  # valid, blanks and signs
    'id,a,b\nx,"0.1",0.9\ny,1.,0\nz,-0,0\n',  # valid, quoted
    "id,a,b\r\nx,0.1,0.9\r\ny,1,0\r\nz,0,1\r\n",  # valid, CRLF
    "\ufeffid,a,b\nx,0.1,0.9\ny,1,0\nz,0,1\n",  # valid, BOM
    "id,a,b\nx,0.1,0.9\ny,1,0\nz,0,5e-324\n",  # valid, subnormal
    "id,a,b\nx,0.1,0.9\ny,1.0000000000000002,0\nz,0,1\n",  # just above 1
    "id,a,b\nx,0.1,0.9\ny,1.00000000000000011,0\nz,0,1\n",  # rounds to 1
    "id,a,b\nx,0.1,0.9\ny,-1e-400,0\nz,0,1\n",  # rounds to -0
    "id,a,b\nx,0.1,0.9\ny,1e400,0\nz,0,1\n",  # inf
    "id,a,b\nx,nan,0.9\ny,NaN,0\nz,,1\n",  # NaN and empty
    "id,a,b\nx,inf,0.9\ny,-inf,0\nz,Infinity,1\n",  # infinities
    "id,a,b\nx,0.1,0.9\ny,x,0\nz,0x1,1\n",  # not numbers
    "id,a,b\nx,0,5,0.9\ny,1,0\nz,0,1\n",  # ragged
    "id,a,b\nx,0.1,0.9\ny,1,0\nz,0\n",  # short row
    "id,a,b\nx,0.1,0.9\nx,1,0\nz,0,1\n",  # duplicate id
    "id,a,b\ny,0.1,0.9\nx,1,0\nz,0,1\n",  # order
    "id,a,b\nx,0.1,0.9\ny,1,0\nw,0,1\n",  # extra and missing
    "id,a,b\nx,0.1,0.9\ny,1,0\n",  # a row short
    "id,b,a\nx,0.1,0.9\ny,1,0\nz,0,1\n",  # columns swapped
    "id,a\nx,0.1\ny,1\nz,0\n",  # a column missing
    "id,a,b,c\nx,0.1,0.9,1\ny,1,0,1\nz,0,1,1\n",  # an extra column
    "id,a,b\nx,True,0.9\ny,1,0\nz,0,1\n",  # a boolean
    "id,a,b\nx,0.1,0.9\ny,1_0,0\nz,0,1\n",  # an underscore
    "id,a,b\nx, ,0.9\ny,1,0\nz,0,1\n",  # a blank
    "id,a,b\nNA,0.1,0.9\ny,1,0\nz,0,1\n",  # an id pandas would call missing
    "",  # empty
    "id,a,b\n",  # header only
]


def both_paths(monkeypatch, path, sample, fmt, target="a"):
    def validate():
        return validate_submission(path, sample, id_column="id", target_column=target,
                                   classes=["a", "b"], format=fmt)  # fmt: skip

    fast = validate()
    with monkeypatch.context() as patch:
        patch.setattr(submission, "_read_probabilities", lambda *args: None)
        slow = validate()
    return fast, slow


@pytest.mark.parametrize("body", BODIES)
def test_the_fast_and_the_text_validation_agree(tmp_path, monkeypatch, body):
    sample = tmp_path / "sample.csv"
    sample.write_text(SAMPLE)
    path = tmp_path / "sub.csv"
    path.write_bytes(body.encode("utf-8"))
    fast, slow = both_paths(monkeypatch, path, sample, "probabilities")
    assert fast == slow


@pytest.mark.parametrize("body", ["id,a\nx,0.1\ny,1\nz,0\n", "id,a\nx,0.1\ny,2\nz,0\n",
                                  "id,a\nx,0.1\ny,\nz,0\n", "id,a\nx,0.1\ny,1\n"])  # fmt: skip
def test_the_paths_agree_for_one_probability_column(tmp_path, monkeypatch, body):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,a\nx,0\ny,0\nz,0\n")
    path = tmp_path / "sub.csv"
    path.write_text(body)
    fast, slow = both_paths(monkeypatch, path, sample, "probability")
    assert fast == slow


def test_a_valid_file_takes_the_fast_path_and_a_bad_one_does_not(tmp_path):
    sample_path = tmp_path / "sample.csv"
    sample_path.write_text(SAMPLE)
    sample = submission.read_sample(sample_path, "id")
    path = tmp_path / "sub.csv"
    path.write_text(BODIES[0])
    assert submission._read_probabilities(path, sample, "id", "probabilities") is not None
    path.write_text(BODIES[6])
    assert submission._read_probabilities(path, sample, "id", "probabilities") is None
    assert submission._read_probabilities(path, sample, "id", "class_index") is None


def test_a_written_submission_validates_on_both_paths(tmp_path, monkeypatch):
    """What the writer writes, the fast path accepts and the text checks agree with."""
    frame = frame_of(2_000)
    frame.columns = ["id", "a", "b", "c"]
    sample = tmp_path / "sample.csv"
    frame.assign(a=0.0, b=0.0, c=0.0).to_csv(sample, index=False)
    path = write_probabilities_csv(tmp_path / "sub.csv", frame)
    fast, slow = both_paths(monkeypatch, path, sample, "probabilities")
    assert fast == slow == []


def test_an_empty_table_is_left_to_pandas(tmp_path):
    with open(tmp_path / "out.csv", "w") as handle:
        assert not write_probabilities(handle, frame_of(0))
