"""Scenario files: TOML with a base, named variants, a grid and comparisons, validated before any work.

A scenario resolves to a list of runs, one per (variant, subject, seed). Keys a variant sets
override the base. A ``grid`` (at the top, or inside one variant) is a cartesian product over
dotted keys: every variant it applies to becomes one variant per point, named after the point
(``continuous,lr=1e-05``). In a grid, ``seed`` and ``subject`` are not variants but the runs'
replicates (``seeds``, ``data.subjects``), which the summary pools. ``--set dotted.key=value`` on
the command line edits the file's table before all that (``--set learning.lr=1e-3`` changes the
base, ``--set variants.x.learning.lr=1e-3`` one variant). docs/scenarios.md documents every key
with its default (``DEFAULTS`` below).
"""
from __future__ import annotations

import copy
import fnmatch
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from encoders.hrf import HRFS
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
    "order_seed": -1,              # seed of the shuffled or blocked order; -1: the run's seed
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
        "trainable_layers": ["all"],  # layers that learn (with the loss's heads); others frozen
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
    "alignment": {                 # the brain modes (brain-aligned, brain-continuous)
        "layer": "last",           # the layer the head reads ("last": the deepest)
        "train_from": "last",      # first layer that learns, up to `layer` ("last": `layer` alone)
        "kernel": 5,               # the head's causal temporal kernel, in brain frames
        "head_lr": 1e-3,           # AdamW rate of the head (the network's is learning.lr)
        "sessions": ["others"],    # brain-aligned: training sessions ("others": all but data.session)
        "validation_fraction": 0.2,  # of the training sessions' sounds, for early stopping
        "epochs": 20,              # brain-aligned: most passes over the training trials
        "patience": 3,             # epochs without a better validation loss before stopping
    },
    "probe": {                     # downstream check: linear probe of sound categories
        "sounds": 0,               # synthetic sounds to probe with (0: no probe)
        "duration_s": 2.0,
        "seed": 12345,             # of the probe's corpus (other sounds than the recording's)
        "test_fraction": 0.5,      # held-out share of the sounds, stratified by category
    },
    "encoder": {
        "lags": [0, 1, 2, 3, 4, 5],  # FIR lags in frames
        "hrf": "fir",              # fir: lags alone; glover: features convolved with the canonical HRF, then lagged
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
CHOICES = {"mode": RUN_MODES, "order": ORDERS, "dtype": ("float32", "float64"), "autocast": AUTOCAST,
           "hrf": HRFS}
NONEMPTY = ("alphas", "lags", "seeds", "subjects", "layers", "trainable_layers", "sessions")
DISTINCT = ("alphas", "lags", "seeds", "subjects", "layers", "trainable_layers", "sessions")
MINIMUM = {"order_seed": -1, "threads": 1, "sample_rate": 1, "steps_per_sound": 1, "mask_span": 1,
           "forgetting": 1e-6, "drift_threshold": 1e-9, "offline_epochs": 1, "kernel": 1,
           "head_lr": 1e-12, "epochs": 1, "patience": 1, "sounds": 0, "duration_s": 0.25,
           "validation_fraction": 1e-6, "test_fraction": 1e-6}
MAXIMUM = {"forgetting": 1.0, "retention": 1.0, "mask_prob": 1.0, "validation_fraction": 0.99,
           "test_fraction": 0.99}
TOP_ONLY = ("variants", "compare", "grid")
# Grid keys that are the runs' replicates, not variants: the summary pools them.
REPLICATES = {"seed": "seeds", "seeds": "seeds", "subject": "data.subjects",
              "data.subjects": "data.subjects"}
# What every variant must share: each replays identical inputs.
SAME_INPUTS = ("data.store", "data.session", "data.tail_s")
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


def with_defaults(cfg: dict, defaults: dict = DEFAULTS) -> dict:
    """A stored run's resolved config with the keys added since it was made at their defaults,
    so a run made by an earlier version still counts as made with the same settings.

    >>> with_defaults({"mode": "frozen", "model": {"device": "cpu"}})["model"]["trainable_layers"]
    ['all']
    """
    out = dict(cfg)
    for key, default in defaults.items():
        if key not in out:
            out[key] = copy.deepcopy(default)
        elif isinstance(default, dict) and isinstance(out[key], dict):
            out[key] = with_defaults(out[key], default)
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
    variants_raw = raw.get("variants", {"default": {}} if "grid" not in raw else {"": {}})
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ScenarioError(f"{where}: 'variants' must be a table of named variants")
    top_grid = _grid_axes(raw.get("grid", {}), where, "grid")
    variants: dict[str, dict] = {}
    for vname, given in variants_raw.items():
        if "/" in vname or vname.startswith("__"):
            raise ScenarioError(f"{where}: variant name {vname!r} may not contain '/' or start "
                                "with '__' (it names a group of the results store)")
        given = dict(given) if isinstance(given, dict) else given
        own = _grid_axes(given.pop("grid", {}), where, f"variants.{vname}.grid") \
            if isinstance(given, dict) else []
        cfg = _merge(base_cfg, given, where, f"variants.{vname}.")
        for label, point in _expand(cfg, top_grid + own, where):
            full = ",".join(part for part in (vname, label) if part) or "default"
            if full in variants:
                raise ScenarioError(f"{where}: two variants are named {full!r}; rename one or "
                                    "change the grid")
            variants[full] = point
    _check_same_inputs(variants, where)
    compare = raw.get("compare", [])
    if not (isinstance(compare, list) and all(isinstance(c, list) and len(c) == 2 for c in compare)):
        raise ScenarioError(f"{where}: 'compare' must be a list of [a, b] pairs of variant names")
    pairs = []
    for a, b in compare:
        for pair in itertools.product(_matching(a, variants, where), _matching(b, variants, where)):
            if pair[0] != pair[1] and pair not in pairs:
                pairs.append(pair)
    return Scenario(name, where, raw, variants, pairs)


def _matching(pattern, variants: dict, where: str) -> list[str]:
    """The variants a ``compare`` entry names: itself, or those its shell pattern matches."""
    if not isinstance(pattern, str):
        raise ScenarioError(f"{where}: compare entries must be variant names, got {pattern!r}")
    if pattern in variants:
        return [pattern]
    found = [v for v in variants if fnmatch.fnmatchcase(v, pattern)]
    if not found:
        raise ScenarioError(f"{where}: compare names variant {pattern!r}, but the variants are "
                            f"{', '.join(variants)}")
    return found


def _grid_axes(table, where: str, path: str) -> list[tuple[str, list, str]]:
    """A grid table as (dotted key, values, its path in the file) axes; nested tables and quoted
    dotted keys (``"learning.lr" = [...]``) both name a key."""
    if not isinstance(table, dict):
        raise ScenarioError(f"{where}: {path} must be a table of dotted keys and lists of values")
    axes = []
    for key, value in table.items():
        if isinstance(value, dict):
            axes += [(f"{key}.{k}", v, p) for k, v, p in _grid_axes(value, where, f"{path}.{key}")]
            continue
        if not isinstance(value, list) or not value:
            raise ScenarioError(f"{where}: {path}.{key} must be a non-empty list of values, got "
                                f"{value!r}")
        if len({repr(v) for v in value}) != len(value):
            raise ScenarioError(f"{where}: {path}.{key} repeats a value, got {value!r}; give each once")
        axes.append((key, value, f"{path}.{key}"))
    return axes


def _expand(cfg: dict, axes, where: str) -> list[tuple[str, dict]]:
    """``cfg`` at every point of the grid ``axes``, each with its label (``lr=1e-05,order=shuffled``)."""
    keys = [k for k, _, _ in axes]
    if len(set(keys)) != len(keys):
        raise ScenarioError(f"{where}: the grid sets {sorted(k for k in set(keys) if keys.count(k) > 1)} "
                            "twice (once at the top, once in a variant?)")
    for key, values, path in axes:  # replicates: one variant, more runs
        if key in REPLICATES:
            cfg = _merge(cfg, _nested(REPLICATES[key], values), where, path[:-len(key)])
    swept = [(k, v, p) for k, v, p in axes if k not in REPLICATES]
    leaves = [k.rsplit(".", 1)[-1] for k, _, _ in swept]
    points = []
    for values in itertools.product(*(v for _, v, _ in swept)):
        point, label = cfg, []
        for (key, _, path), leaf, value in zip(swept, leaves, values):
            point = _merge(point, _nested(key, value), where, path[:-len(key)])
            name = leaf if leaves.count(leaf) == 1 else key
            label.append(f"{name}={_format(value)}")
        points.append((",".join(label), point))
    return points


def _nested(dotted: str, value) -> dict:
    """``"learning.lr", 1e-3`` -> ``{"learning": {"lr": 1e-3}}``."""
    *parents, leaf = dotted.split(".")
    table = {leaf: value}
    for key in reversed(parents):
        table = {key: table}
    return table


def _format(value) -> str:
    """A grid value as it appears in a variant's name (no '/': names are store groups)."""
    if isinstance(value, list):
        return "+".join(_format(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("/", "_")


def _check_same_inputs(variants: dict[str, dict], where: str) -> None:
    for key in SAME_INPUTS:
        section, leaf = key.split(".")
        seen = {name: cfg[section][leaf] for name, cfg in variants.items()}
        if len({repr(v) for v in seen.values()}) > 1:
            listed = ", ".join(f"{name}: {v!r}" for name, v in seen.items())
            raise ScenarioError(f"{where}: {key} differs between variants ({listed}); every "
                                "variant replays the same inputs, so set it once, in the base")


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
