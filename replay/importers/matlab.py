"""MATLAB .mat files through scipy (formats v4 to v7): variables, and fields of structs by path.

v7.3 files are HDF5, which scipy does not read; they are refused with the one-line way to re-save
them as v7 (MATLAB's ``save(..., '-v7')``), which holds variables up to 2 GB each.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _check_readable(path: Path):
    from scipy.io.matlab import matfile_version

    if not path.is_file():
        raise FileNotFoundError(f"MATLAB file {str(path)!r} does not exist")
    try:
        major, _ = matfile_version(str(path))
    except Exception as err:  # scipy's MatReadError, or a file too short to hold a header
        raise ValueError(f"{path.name}: not a MATLAB .mat file ({' '.join(str(err).split())})") from None
    if major == 2:
        raise ValueError(f"{path.name}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it "
                         f"as v7 in MATLAB: S = load('{path.name}'); save('{path.name}', '-struct', 'S', '-v7')")


def load_variable(path, name: str, option: str, squeeze: bool = False):
    """Variable ``name`` of the .mat file ``path``; ``option`` is the setting that names it, for
    the error when the file has no such variable. Arrays keep MATLAB's dimensions unless ``squeeze``;
    structs come back as objects whose fields are attributes."""
    from scipy.io import loadmat

    variable_shape(path, name, option)  # a readable file that holds the variable
    try:
        return loadmat(str(path), variable_names=[name], squeeze_me=squeeze, struct_as_record=False)[name]
    except Exception as err:  # a truncated or corrupted file: scipy raises several kinds
        raise ValueError(f"{Path(path).name}: cannot read {name!r} from it "
                         f"({' '.join(str(err).split())})") from None


def field(struct, dotted: str, where: str, option: str):
    """The field at ``dotted`` ("msk.ManualMask") of a struct loaded with ``load_variable``."""
    value, walked = struct, []
    for part in dotted.split("."):
        names = list(getattr(value, "_fieldnames", None) or [])
        if part not in names:
            at = ".".join(walked) or "the struct"
            raise ValueError(f"{where}: {at} has no field {part!r} (its fields: {names}); name the "
                             f"right one with {option}")
        value, walked = getattr(value, part), walked + [part]
    return value


def strings(value) -> list[str]:
    """A MATLAB cell array of char (or one char array) as a list of str."""
    return [str(v).strip() for v in np.atleast_1d(np.asarray(value, dtype=object)).ravel(order="F")]


def variable_shape(path, name: str, option: str) -> tuple:
    """The shape of variable ``name`` of ``path``, read from the file's directory (no data loaded)."""
    from scipy.io import whosmat

    path = Path(path)
    _check_readable(path)
    try:
        held = {v[0]: tuple(v[1]) for v in whosmat(str(path))}
    except Exception as err:
        raise ValueError(f"{path.name}: cannot read it as a MATLAB file ({' '.join(str(err).split())})") from None
    if name not in held:
        raise ValueError(f"{path.name}: no variable {name!r} (it holds {sorted(held)}); name the right "
                         f"one with {option}")
    return held[name]
