"""Tables of presentations (CSV or TSV): columns by name, with errors naming file, row and column."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

MISSING = ("", "n/a", "na", "nan")  # BIDS writes n/a for a missing value


class Table:
    """A CSV (``,``) or TSV (``.tsv``: tab) file read as named columns of strings.

    Row numbers in errors count the header as row 1, as a spreadsheet shows them.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "order.csv"
    >>> _ = path.write_text("stimulus,repetition\\n3,1\\n1,2\\n")
    >>> table = Table(path, required=["stimulus", "repetition"])
    >>> len(table), table.integers("stimulus").tolist()
    (2, [3, 1])
    """

    def __init__(self, path, required=(), what: str = "table"):
        self.path, self.what = Path(path), what
        if not self.path.is_file():
            raise FileNotFoundError(f"{what} {str(self.path)!r} does not exist")
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        with open(self.path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel's BOM
            rows = [row for row in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in row)]
        if not rows:
            raise ValueError(f"{self._name}: the file is empty; expected a header row with the "
                             f"columns {', '.join(required)}")
        self.columns = [c.strip() for c in rows[0]]
        missing = [c for c in required if c not in self.columns]
        if missing:
            sep = "tab" if delimiter == "\t" else "comma"
            raise ValueError(f"{self._name}: missing column(s) {', '.join(map(repr, missing))}; it has "
                             f"{self.columns} ({sep}-separated); expected {', '.join(required)}")
        for i, row in enumerate(rows[1:], start=2):
            if len(row) != len(self.columns):
                raise ValueError(f"{self._name}: row {i} has {len(row)} values for "
                                 f"{len(self.columns)} columns {self.columns}")
        self._rows = [[c.strip() for c in row] for row in rows[1:]]

    _name = property(lambda self: f"{self.what} {self.path.name}")

    def __len__(self):
        return len(self._rows)

    def __contains__(self, column):
        return column in self.columns

    def strings(self, column) -> list[str]:
        j = self.columns.index(column)
        return [row[j] for row in self._rows]

    def numbers(self, column, missing=None) -> np.ndarray:
        """Column as float64; an empty or n/a cell becomes ``missing``, or an error when None."""
        out = np.empty(len(self), dtype=np.float64)
        for i, text in enumerate(self.strings(column)):
            if text.lower() in MISSING and missing is not None:
                out[i] = missing
                continue
            try:
                out[i] = float(text)
            except ValueError:
                raise ValueError(f"{self._name}: row {i + 2}, column {column!r}: {text!r} is not a "
                                 "number") from None
            if not np.isfinite(out[i]):
                raise ValueError(f"{self._name}: row {i + 2}, column {column!r}: {text!r} is not a "
                                 "finite number")
        return out

    def integers(self, column) -> np.ndarray:
        values = self.numbers(column)
        bad = np.flatnonzero(values != np.round(values))
        if bad.size:
            raise ValueError(f"{self._name}: row {bad[0] + 2}, column {column!r}: "
                             f"{self.strings(column)[bad[0]]!r} is not a whole number")
        return values.astype(np.int64)

    def fail(self, row: int, column: str, problem: str):
        """Raise a ValueError about the 0-based data row ``row``, numbered as the file shows it."""
        raise ValueError(f"{self._name}: row {row + 2}, column {column!r}: {problem}")


def counted_repeats(stimulus) -> np.ndarray:
    """For each presentation, how many times its stimulus was presented before it (0 first).

    >>> counted_repeats([4, 2, 4, 4, 2]).tolist()
    [0, 0, 1, 2, 1]
    """
    stimulus = np.asarray(stimulus)
    out = np.zeros(len(stimulus), dtype=np.int64)
    seen: dict = {}
    for i, s in enumerate(stimulus.tolist()):  # a loop over presentations (hundreds)
        out[i] = seen.get(s, 0)
        seen[s] = out[i] + 1
    return out
