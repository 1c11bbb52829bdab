"""A folder of sound files: the stimuli of a recording store (and a corpus to pretrain on).

Files are taken in sorted path order, so a stimulus' index (what an acquisition's ``event``
names, docs/protocol.md) is its place in that order; a file in a subfolder takes the
subfolder's name as its category. Reading goes through soundfile; every file is downmixed to mono
and resampled (scipy) to one rate.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .trials import resample

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def audio_files(folder, what: str = "folder") -> list[Path]:
    """The sound files under ``folder``, sorted; a one-line error naming the ``what`` when there
    are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(folder)!r} is not a folder of sound files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"{what} {str(folder)!r} holds no audio files "
                         f"({', '.join(AUDIO_SUFFIXES)})")
    return files


def read_audio(path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """``(wave, rate)``: one file as mono float32, resampled to ``sample_rate`` when given."""
    import soundfile

    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise ValueError(f"cannot read {str(path)!r} as audio: {err}") from None
    wave = wave.mean(axis=1)
    if sample_rate is None:
        return wave, int(rate)
    return resample(wave, int(rate), int(sample_rate)), int(sample_rate)


def read_audio_folder(folder, sample_rate: int | None = None):
    """Every sound of ``folder`` at one rate (``sample_rate``, or the first file's); returns
    ``(waves, rate, names, categories)`` for `replay.store.RecordingWriter.write_stimuli`."""
    folder = Path(folder)
    files = audio_files(folder)
    rate = read_audio(files[0])[1] if sample_rate is None else sample_rate
    waves = [read_audio(path, rate)[0] for path in files]
    names = [str(p.relative_to(folder).with_suffix("")) for p in files]
    categories = [p.parent.name if p.parent != folder else "unknown" for p in files]
    return waves, rate, names, categories
