import pandas as pd
import pytest

from kit.errors import SubmissionError
from kit.submission import check_submission, validate_submission


@pytest.fixture
def sample(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": 0})
    path = tmp_path / "sample_submission.csv"
    frame.to_csv(path, index=False)
    return path


def problems(tmp_path, sample, text):
    path = tmp_path / "sub.csv"
    path.write_text(text)
    return validate_submission(
        path, sample, id_column="id", target_column="label", classes=list(range(10))
    )


def test_a_valid_file_has_no_problems(tmp_path, sample):
    assert problems(tmp_path, sample, "id,label\na,1\nb,2\nc,3\nd,9\n") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id,label\na,1\nb,2\nc,3\n", ["3 rows; expected 4", "1 id(s) missing: d"]),
        ("id,label\na,1\na,2\nc,3\nd,4\n", ["1 duplicate id(s): a", "1 id(s) missing: b"]),
        ("id,target\na,1\nb,2\nc,3\nd,4\n", ["header is id,target; expected id,label"]),
        ("id,label\na,1\nb,\nc,NaN\nd,4\n", ["2 empty or NaN value(s) in label"]),
        ("id,label\na,1\nb,2\nc,3\nd,12\n", ["outside the class set: 12"]),
        ("id,label\na,1\nb,2.5\nc,x\nd,4\n", ["must hold integer class indices; found 2.5, x"]),
        ("id,label\nb,1\na,2\nc,3\nd,4\n", ["not in sample_submission's order (row 2 has b"]),
        ("id,label\na,1\nb,2\nc,3\nz,4\n", ["1 id(s) missing: d", "not in the test set: z"]),
    ],
)
def test_each_problem_gets_its_own_line(tmp_path, sample, text, expected):
    found = problems(tmp_path, sample, text)
    assert len(found) == len(expected), found
    for line, fragment in zip(found, expected, strict=True):
        assert fragment in line


def test_check_submission_raises_every_problem(tiny):
    from kit.data.layout import class_list, read_train_items

    path = tiny.root / "bad.csv"
    path.write_text("id,label\nnope,11\n")
    with pytest.raises(SubmissionError) as caught:
        check_submission(tiny, path, class_list(read_train_items(tiny)))
    assert len(caught.value.problems) >= 3


def test_probability_formats_are_validated(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,a,b\nx,0,0\ny,0,0\n")
    good = tmp_path / "good.csv"
    good.write_text("id,a,b\nx,0.2,1\ny,0,0.5\n")
    args = {"id_column": "id", "target_column": "label", "classes": ["a", "b"]}
    assert validate_submission(good, sample, format="probabilities", **args) == []
    bad = tmp_path / "bad.csv"
    bad.write_text("id,a,b\nx,1.5,cat\ny,0,\n")
    problems = validate_submission(bad, sample, format="probabilities", **args)
    assert any("a must hold probabilities in [0, 1]; found 1.5" in p for p in problems)
    assert any("b must hold probabilities" in p and "cat" in p for p in problems)
    assert any("1 empty or NaN value(s) in b" in p for p in problems)


def test_class_index_of_named_classes_is_their_position(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,ans\nx,0\ny,0\n")
    path = tmp_path / "sub.csv"
    path.write_text("id,ans\nx,2\ny,3\n")
    args = {"id_column": "id", "target_column": "ans", "classes": ["a", "b", "c"]}
    problems = validate_submission(path, sample, format="class_index", **args)
    assert problems == ["ans has value(s) outside the class set: 3 (classes: 0, 1, 2)"]
