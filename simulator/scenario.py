"""Scenario files: TOML with a base, named variants and comparisons, validated before any work.

A scenario resolves to a list of runs, one per (variant, subject, seed). Keys a variant sets
override the base; ``--set dotted.key=value`` on the command line edits the file's table before
that (so ``--set learning.lr=1e-3`` changes the base and ``--set variants.x.learning.lr=1e-3``
one variant). The README documents every key with its default (``DEFAULTS`` below).
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path

from replay.checks import allowed_values
from replay.ordering import ORDERS

from .model import AUTOCAST
from .modes import RUN_MODES


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the key path."""


DEFAULTS = {
    "description": "",
    "mode": "continuous",          # frozen | continuous | reset | random | offline (simulator.modes)
    "order": "recorded",           # recorded | shuffled | reversed | blocked
    "seeds": [0],                  # learner seeds (masks, negatives, dropout; and the shuffle)
    "data": {
        "store": "",               # recording store (--store overrides)
        "subjects": ["all"],       # subject names, or "all"
        "session": "0",
        "tail_s": 6.0,             # hemodynamic tail kept after each sound
        "speed": 0.0,              # 0: as fast as possible; 1: real time
    },
    "model": {
        "checkpoint": "",          # directory from `cortexreplay pretrain`, or a hub id
        "device": "cpu",
        "threads": 1,              # torch threads per run (1 is fastest for tiny models)
        "sample_rate": 16000,
        "autocast": "none",        # "bfloat16": forward passes under bf16 autocast (GPUs, AMX CPUs)
    },
    "learning": {
        "lr": 1e-4,
        "steps_per_sound": 1,
        "retention": 1.0,          # theta <- theta0 + retention (theta - theta0) after each sound
        "weight_decay": 0.0,
        "mask_prob": 0.4,
        "mask_span": 3,
        "offline_epochs": 1,       # the offline mode's passes over the recording's sounds
    },
    "encoder": {
        "lags": [0, 1, 2, 3, 4, 5],  # FIR lags in frames
        # ridge penalties on standardised features; each voxel takes the one with the least
        # prequential error so far (encoders.OnlineRidge)
        "alphas": [1.0, 10.0, 100.0, 1000.0, 10000.0],
        "forgetting": 1.0,         # weight the encoder's past keeps per trial (1: all of it)
        "drift_threshold": 50.0,   # Page-Hinkley threshold on each voxel's 1 - R^2 per trial
        "components": 0,           # > 0: each layer's features randomly projected to this many first
        "warmup": 10,              # trials learned from but not scored
        "layers": ["all"],
        "device": "cpu",           # torch device of the encoder's statistics ("cuda" on a GPU)
        "dtype": "float32",        # precision of the voxel-sized statistics
    },
}
CHOICES = {"mode": RUN_MODES, "order": ORDERS, "dtype": ("float32", "float64"), "autocast": AUTOCAST}
NONEMPTY = ("alphas", "lags", "seeds", "subjects", "layers")
DISTINCT = ("alphas", "lags", "seeds", "subjects", "layers")
MINIMUM = {"threads": 1, "sample_rate": 1, "steps_per_sound": 1, "mask_span": 1,
           "forgetting": 1e-6, "drift_threshold": 1e-9, "offline_epochs": 1}
MAXIMUM = {"forgetting": 1.0, "retention": 1.0, "mask_prob": 1.0}
TOP_ONLY = ("variants", "compare")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", bool: "a boolean"}


@dataclass(frozen=True)
class RunSpec:
    """One replay: a variant on one subject with one learner seed, fully resolved."""

    variant: str
    subject: str
    seed: int
    config: dict

    @property
    def run_id(self) -> str:
        return f"{self.variant}/{self.subject}/seed-{self.seed}"


@dataclass
class Scenario:
    name: str
    path: str
    raw: dict
    variants: dict[str, dict]      # variant name -> resolved config
    compare: list[tuple[str, str]]

    def runs(self, subjects: list[str]) -> list[RunSpec]:
        """Every run, given the recording's subjects. A frozen run in recorded order does not
        depend on the seed, so it runs once."""
        out = []
        for name, cfg in self.variants.items():
            wanted = cfg["data"]["subjects"]
            chosen = subjects if wanted == ["all"] else wanted
            unknown = sorted(set(chosen) - set(subjects))
            if unknown:
                raise ScenarioError(f"{self.path}: variants.{name}.data.subjects names {unknown}, "
                                    f"but the recording has subjects {subjects}")
            seeds = cfg["seeds"][:1] if cfg["mode"] == "frozen" and cfg["order"] == "recorded" else cfg["seeds"]
            out += [RunSpec(name, s, int(seed), cfg) for s in chosen for seed in seeds]
        return out


def parse_set(assignment: str) -> tuple[list[str], object]:
    """``"learning.lr=1e-3"`` -> (["learning", "lr"], 0.001); values are TOML, else strings."""
    if "=" not in assignment:
        raise ScenarioError(f"--set expects dotted.key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def load_scenario(path: str | Path, sets=()) -> Scenario:
    """Read, override, validate and resolve a scenario file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: not valid TOML ({err})") from None
    for assignment in sets:
        keys, value = parse_set(assignment)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ScenarioError(f"--set {assignment}: {k!r} is not a table")
        node[keys[-1]] = value
    return resolve_scenario(raw, path.stem, str(path))


def resolve_scenario(raw: dict, name: str, where: str) -> Scenario:
    """Validate and resolve a scenario given as a table (what a TOML file parses to); ``where``
    names it in error messages."""
    base = {k: v for k, v in raw.items() if k not in TOP_ONLY}
    base_cfg = _merge(DEFAULTS, base, where, "")
    variants_raw = raw.get("variants", {"default": {}})
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ScenarioError(f"{where}: 'variants' must be a table of named variants")
    variants = {name: _merge(base_cfg, v, where, f"variants.{name}.") for name, v in variants_raw.items()}
    compare = raw.get("compare", [])
    if not (isinstance(compare, list) and all(isinstance(c, list) and len(c) == 2 for c in compare)):
        raise ScenarioError(f"{where}: 'compare' must be a list of [a, b] pairs of variant names")
    for a, b in compare:
        for v in (a, b):
            if v not in variants:
                raise ScenarioError(f"{where}: compare names variant {v!r}, but the variants are "
                                    f"{', '.join(variants)}")
    return Scenario(name, where, raw, variants, [tuple(c) for c in compare])


def _merge(defaults: dict, given: dict, where: str, prefix: str) -> dict:
    """Defaults overridden by ``given``, type-checked key by key."""
    if not isinstance(given, dict):
        raise ScenarioError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a table")
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ScenarioError(f"{where}: unknown key {path!r} (known keys here: {known})")
        default = defaults[key]
        if isinstance(default, dict):
            out[key] = _merge(default, value, where, path + ".")
        else:
            out[key] = _check_value(value, default, key, path, where)
    return out


def _check_value(value, default, key, path, where):
    if (isinstance(default, list) and isinstance(value, (str, int, float))
            and not isinstance(value, bool)):
        value = [value]  # a single subject, seed, layer or penalty
    if isinstance(default, list) and default and isinstance(default[0], float) and isinstance(
            value, list):
        value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(default, str) and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # --set data.session=1 names session "1"
    if type(value) is not type(default):
        raise ScenarioError(f"{where}: {path} must be {_TYPE_NAMES[type(default)]}, "
                            f"got {value!r}")
    if isinstance(default, list) and default and not all(
            type(v) is type(default[0]) for v in value):
        kind = _TYPE_NAMES[type(default[0])].split()[-1]
        raise ScenarioError(f"{where}: {path} must be a list of {kind}s, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ScenarioError(f"{where}: invalid value for {path!r}. Allowed values are "
                            f"{allowed_values(CHOICES[key])}, but got {value!r} instead.")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < MINIMUM.get(key, 0):
        raise ScenarioError(f"{where}: {path} must be at least {MINIMUM.get(key, 0)}, got {value!r}")
    if isinstance(value, list) and any(isinstance(v, (int, float)) and (v < 0 or v != v)
                                       for v in value):
        raise ScenarioError(f"{where}: {path} must hold numbers >= 0, got {value!r}")
    if key in NONEMPTY and not value:
        raise ScenarioError(f"{where}: {path} must not be empty")
    if key in DISTINCT and len(set(value)) != len(value):
        raise ScenarioError(f"{where}: {path} repeats a value, got {value!r}; give each once")
    if key in MAXIMUM and value > MAXIMUM[key]:
        raise ScenarioError(f"{where}: {path} must be at most {MAXIMUM[key]}, got {value!r}")
    return value
