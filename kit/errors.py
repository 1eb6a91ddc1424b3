"""Errors a user can fix. The CLI turns every KitError into one line on stderr and exit code 2."""


class KitError(Exception):
    """A mistake in input or usage; the message names the file or field and the fix."""

    exit_code = 2


class ConfigError(KitError):
    """kit.toml or a --set override is wrong."""


class DataError(KitError):
    """The competition's data is missing or malformed."""


class ProblemsError(KitError):
    """Several problems with one file; the CLI prints each on its own line."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class SubmissionError(ProblemsError):
    """A submission file does not match the competition's format."""


class FoldsError(ProblemsError):
    """folds.csv leaks between folds or leaves a class out of one."""


class LimitError(KitError):
    """A platform limit is reached (daily submissions)."""
