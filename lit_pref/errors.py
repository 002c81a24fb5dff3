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


def check_range(
    option: str,
    value: float | None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> None:
    """Raise ConfigError naming `option` unless `value` lies in the given bounds (None means unset: passes)."""
    if value is None:
        return
    rules = [("> ", gt, lambda b: value > b), (">= ", ge, lambda b: value >= b),
             ("< ", lt, lambda b: value < b), ("<= ", le, lambda b: value <= b)]  # fmt: skip
    broken = [f"{op}{bound}" for op, bound, ok in rules if bound is not None and not ok(bound)]
    if broken or value != value:  # value != value: NaN
        wanted = " and ".join(f"{op}{bound}" for op, bound, _ in rules if bound is not None)
        raise ConfigError(f"{option} must be {wanted}, got {value}. Fix the option in your config")


class CheckpointError(LitPrefError, OSError):
    """A checkpoint that cannot be written (disk full, unwritable folder) or read (truncated, damaged)."""


class DivergenceError(LitPrefError, RuntimeError):
    """Training produced a non-finite loss or gradient norm (or weights), and was stopped."""
