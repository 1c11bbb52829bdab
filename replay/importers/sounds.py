"""The sounds of an import, found by name in a folder and read at one rate (soundfile, scipy).

A sound is named by its path relative to the folder, with or without its suffix (``speech/s01``,
``speech/s01.wav``), or by its bare file name where no other file shares it (``s01``). Its
stored name is that relative path without suffix, and its category the subfolder it lies in
("unknown" at the top), as for `replay.audio_folder`.
"""
from __future__ import annotations

from pathlib import Path

from ..audio_folder import audio_files, read_audio


class SoundFolder:
    """Sound files of ``folder``, looked up by name.

    >>> import tempfile, pathlib, numpy as np, soundfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "speech").mkdir()
    >>> soundfile.write(root / "speech" / "s01.wav", np.zeros(800), 8000)
    >>> sounds = SoundFolder(root)
    >>> [sounds.find(n).name for n in ("speech/s01", "speech/s01.wav", "s01")]
    ['s01.wav', 's01.wav', 's01.wav']
    >>> sounds.name(sounds.find("s01")), sounds.category(sounds.find("s01"))
    ('speech/s01', 'speech')
    """

    def __init__(self, folder, what: str = "sound folder"):
        self.folder, self.what = Path(folder), what
        self.files = audio_files(self.folder, what)
        self._by_name: dict[str, Path | None] = {}
        for path in self.files:
            relative = path.relative_to(self.folder)
            for key in (relative.as_posix(), relative.with_suffix("").as_posix()):
                self._by_name[key] = path
        bare: dict[str, set] = {}
        for path in self.files:
            for key in (path.name, path.stem):
                bare.setdefault(key, set()).add(path)
        for key, paths in bare.items():  # a bare name counts only where one file has it
            self._by_name.setdefault(key, paths.pop() if len(paths) == 1 else None)

    def find(self, name: str, where: str = "") -> Path:
        """The file ``name`` names; an error saying where it was asked for (``where``) if none."""
        path = self._by_name.get(str(name).strip().replace("\\", "/"))
        if path is None:
            problem = ("names more than one file; give its path relative to the folder"
                       if str(name) in self._by_name else "names no file of it")
            example = self.files[0].relative_to(self.folder).with_suffix("").as_posix()
            raise ValueError(f"{where + ': ' if where else ''}sound {str(name)!r} {problem} "
                             f"({self.what} {str(self.folder)!r}, {len(self.files)} files, e.g. "
                             f"{example!r}); names are paths relative to the folder, with or without "
                             "suffix")
        return path

    def name(self, path: Path) -> str:
        return Path(path).relative_to(self.folder).with_suffix("").as_posix()

    def category(self, path: Path) -> str:
        return Path(path).parent.name if Path(path).parent != self.folder else "unknown"


def read_sounds(sounds: SoundFolder, paths, sample_rate: int | None = None):
    """``(waves, rate, names, categories)`` of ``paths`` at one rate (``sample_rate``, or the first
    file's), ready for `replay.store.RecordingWriter.write_stimuli`."""
    if sample_rate is not None and not (isinstance(sample_rate, int) and sample_rate > 0):
        raise ValueError(f"Invalid value for the 'sample_rate' parameter. Allowed values are positive "
                         f"integers (Hz) or None, but got {sample_rate!r} instead.")
    paths = list(paths)
    rate = sample_rate or read_audio(paths[0])[1]
    waves = [read_audio(p, rate)[0] for p in paths]
    return waves, rate, [sounds.name(p) for p in paths], [sounds.category(p) for p in paths]
