"""The one exception type alignkit raises for bad input, so callers can catch it and CLIs print it cleanly."""


class AlignkitError(ValueError):
    """Bad input or configuration. The message names the file, row, field or option, and the fix."""

    def _render_traceback_(self) -> list[str]:
        """What IPython and Jupyter show instead of the stack: the message already says what to do."""
        return [f"{type(self).__name__}: {self}"]


class DataError(AlignkitError):
    """A data file or row that cannot be used as given."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        where = ", ".join(part for part in (
            f"file {source}" if source else "",
            f"row {row}" if row is not None else "",
            f"field '{field}'" if field else "",
        ) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.source, self.row, self.field = source, row, field
