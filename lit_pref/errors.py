"""Exceptions a user can cause: each message names the file, row, column or option and says what to do."""


class LitPrefError(Exception):
    """Base class of every error lit_pref raises for bad user input."""


class ConfigError(LitPrefError, ValueError):
    """An option, or a combination of options, that cannot work."""


class DataError(LitPrefError, ValueError):
    """A data file or row that cannot be used as given."""


def row_error(source: str, row: int, column: str | None, problem: str, fix: str) -> DataError:
    """Build the standard "file, row, column: problem. fix" message for one bad row."""
    where = f"{source}, row {row}" + (f", column '{column}'" if column else "")
    return DataError(f"{where}: {problem}. {fix}")
