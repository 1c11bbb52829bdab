"""The all-or-nothing write of an imported store: a ``.partial`` beside it, renamed at the end.

An interrupted or failed import leaves no folder that looks like a finished store, and an existing
store is replaced only when asked (``force``), and only once the new one is complete and valid.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..store import RecordingWriter, StoreError, validate


@dataclass
class ImportSummary:
    """What an importer wrote: the store's path, counts, and notes worth telling the user."""

    path: Path
    subjects: int = 0
    sessions: int = 0
    events: int = 0
    stimuli: int = 0
    notes: list = field(default_factory=list)

    def __str__(self):
        return (f"{self.path}: {self.subjects} subject(s), {self.sessions} session(s), "
                f"{self.events} events of {self.stimuli} stimuli")


def check_target(out, force: bool) -> Path:
    """``out`` as a Path; refuse an existing non-empty one unless ``force`` (before any work)."""
    out = Path(out)
    if out.exists() and not force and (out.is_file() or any(out.iterdir())):
        raise StoreError(f"{out}: path exists and is not empty; pass --force (force=True) to replace it")
    return out


def _remove(path: Path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@contextmanager
def new_store(out, modality: str, force: bool = False):
    """Yield a ``RecordingWriter`` on ``<out>.partial``; on leaving, validate it and rename it to
    ``out``. On any error (or Ctrl-C) the partial store is removed and ``out`` is left as it was."""
    out = check_target(out, force)
    partial = out.with_name(out.name + ".partial")
    _remove(partial)  # the leftover of an import killed too hard to clean up after itself
    try:
        with RecordingWriter(partial, modality=modality, overwrite=True) as writer:
            yield writer
        try:
            validate(partial)
        except StoreError as err:
            raise StoreError("the imported data would not replay: "
                             + str(err).replace(partial.name, out.name)) from None
    except BaseException:
        _remove(partial)
        raise
    _remove(out)  # only reached with force or an empty folder (check_target)
    os.replace(partial, out)
