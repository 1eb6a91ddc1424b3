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
