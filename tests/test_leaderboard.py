import pandas as pd
import pytest

from kit.errors import KitError, LimitError
from kit.platforms.local import LocalLeaderboard


@pytest.fixture
def board(tmp_path):
    answers = pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(8)],
            "target": [0, 1, 2, 3, 0, 1, 2, 3],
            "usage": ["Public"] * 4 + ["Private"] * 4,
        }
    )
    board = LocalLeaderboard(tmp_path / "lb.sqlite")
    board.register("toy", answers, metric="accuracy", daily_limit=3)
    yield board
    board.close()


def write(tmp_path, labels, name="sub.csv"):
    path = tmp_path / name
    pd.DataFrame({"id": [f"i{k}" for k in range(8)], "label": labels}).to_csv(path, index=False)
    return path


def test_scores_public_now_and_keeps_private(board, tmp_path):
    # public half: 3 of 4 right; private half: 1 of 4 right
    result = board.submit("toy", write(tmp_path, [0, 1, 2, 0, 0, 0, 0, 0]), "first", team="a")
    assert result["public_score"] == 0.75
    assert "private_score" not in result
    public = board.leaderboard("toy")
    assert "private_score" not in public.columns
    private = board.leaderboard("toy", private=True)
    assert private.loc[0, "private_score"] == 0.25
    row = board.db.execute("SELECT message, file_sha256, team FROM submissions").fetchone()
    assert row[0] == "first" and len(row[1]) == 64 and row[2] == "a"


def test_ranks_teams_by_their_best_public_score(board, tmp_path):
    board.submit("toy", write(tmp_path, [0, 0, 0, 0, 0, 0, 0, 0]), "weak", team="a")
    board.submit("toy", write(tmp_path, [0, 1, 2, 3, 0, 0, 0, 0]), "perfect public", team="b")
    board.submit("toy", write(tmp_path, [0, 1, 0, 0, 0, 1, 2, 3]), "better", team="a")
    table = board.leaderboard("toy")
    assert table["team"].tolist() == ["b", "a"]
    assert table["public_score"].tolist() == [1.0, 0.5]
    assert table["entries"].tolist() == [1, 2]
    # the host's view ranks by private score
    assert board.leaderboard("toy", private=True)["team"].tolist() == ["a", "b"]


def test_daily_limit(board, tmp_path):
    path = write(tmp_path, [0] * 8)
    for _ in range(3):
        board.submit("toy", path, "again", team="a")
    with pytest.raises(LimitError, match="daily limit of 3"):
        board.submit("toy", path, "one too many", team="a")
    board.submit("toy", path, "another team has its own count", team="b")


def test_unknown_competition(board, tmp_path):
    with pytest.raises(KitError, match="no answer key.*kit download"):
        board.submit("other", write(tmp_path, [0] * 8), "x")
