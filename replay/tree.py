"""Nested state as flat named arrays plus JSON scalars: how state crosses the wire and lands on disk.

A *tree* is a dict whose values are numpy arrays, JSON scalars (str, int, float, bool, None),
lists of scalars, or trees. `flatten` splits it into arrays named by their ``/``-joined path
(what a wire message or a safetensors file carries) and the remaining scalars, also keyed by
path (a JSON object). `unflatten` rebuilds the tree. Nothing is pickled, so a checkpoint or an
encoder state read back can hold only arrays and JSON.

>>> scalars, arrays = flatten({"ridge": {"xy_": np.zeros((2, 3)), "n_": 4}, "mode": "both"})
>>> scalars, sorted(arrays)
({'ridge/n_': 4, 'mode': 'both'}, ['ridge/xy_'])
>>> unflatten(scalars, arrays)["ridge"]["xy_"].shape
(2, 3)
"""
from __future__ import annotations

import math

import numpy as np

SEPARATOR = "/"


def flatten(tree: dict, prefix: str = "") -> tuple[dict, dict[str, np.ndarray]]:
    """Split ``tree`` into ``(scalars, arrays)``, both keyed by path; a numpy scalar becomes a
    Python one. Keys must be non-empty strings without ``/``."""
    scalars, arrays = {}, {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or SEPARATOR in key:
            raise ValueError(f"state keys must be non-empty strings without {SEPARATOR!r}, "
                             f"but got {key!r} under {prefix or 'the root'!r}")
        path = prefix + key
        if isinstance(value, dict):
            if not value:
                raise ValueError(f"state entry {path!r} is an empty dict, which cannot be stored")
            inner_scalars, inner_arrays = flatten(value, path + SEPARATOR)
            scalars.update(inner_scalars)
            arrays.update(inner_arrays)
        elif isinstance(value, np.ndarray):
            arrays[path] = value
        else:
            scalars[path] = _scalar(path, value)
    return scalars, arrays


def _scalar(path: str, value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_scalar(path, v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN or inf; a 0-d array keeps them exactly.
        raise ValueError(f"state entry {path!r} is {value}; store it as a 0-d array")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"state entry {path!r} is a {type(value).__name__}; only arrays and JSON "
                     "scalars can be stored")


def unflatten(scalars: dict, arrays: dict) -> dict:
    """The tree that `flatten` split into ``scalars`` and ``arrays``."""
    tree: dict = {}
    for path, value in (*scalars.items(), *arrays.items()):
        node = tree
        *parents, leaf = str(path).split(SEPARATOR)
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"state path {path!r} runs through a value, not a group")
        if leaf in node:
            raise ValueError(f"state path {path!r} is given twice")
        node[leaf] = value
    return tree
