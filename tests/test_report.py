"""`cortexreplay report` on results stores made by real scenario runs over the tiny recording."""
import base64
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from simulator.cli import main
from simulator.report import build_report
from simulator.results import open_results
from simulator.run import run_scenarios
from simulator.scenario import resolve_scenario
from simulator.summary import summarize

pytestmark = pytest.mark.timeout(240)

N_BOOT = N_PERM = 200
BASE = {"description": "report test: two learning rates and a frozen network",
        "seeds": [0], "learning": {"lr": 1e-3, "retention": 0.9},
        "encoder": {"lags": [0, 1, 2], "warmup": 2}}
# A grid, compared through a pattern: the store must keep the pairs it resolves to.
SWEEP = {**BASE, "compare": [["learn,*", "frozen"]],
         "variants": {"learn": {"grid": {"learning.lr": [1e-3, 3e-3]}}, "frozen": {"mode": "frozen"}}}
SLOW, FAST = "learn,lr=0.001", "learn,lr=0.003"
SINGLE = {**BASE, "variants": {"frozen": {"mode": "frozen"}}}
PNG = b"\x89PNG\r\n\x1a\n"
EMBEDDED = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_recording, tiny_checkpoint):
    """A store whose variants differ in learning rate (plus a frozen one), and a one-variant one,
    made by one real replay of both scenarios (one process pool, one encoder service)."""
    tmp = tmp_path_factory.mktemp("report")
    items = []
    for name, raw in (("sweep", SWEEP), ("single", SINGLE)):
        raw = {**raw, "model": {"checkpoint": str(tiny_checkpoint)}}
        items.append((resolve_scenario(raw, name, name), str(tiny_recording), tmp / f"{name}.zarr"))
    run_scenarios(items, jobs=2, log=lambda *_: None, progress_bar=False)
    return items[0][2], items[1][2]


@pytest.fixture(scope="module")
def sweep_report(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep-report") / "report"
    plots = build_report(stores[0], out, n_boot=N_BOOT, n_perm=N_PERM)
    return out, plots, (out / "index.html").read_text(encoding="utf-8")


class _Tables(HTMLParser):
    """The text of every cell of every table with an id: {id: [[cell, ...], ...]}."""

    def __init__(self, text):
        super().__init__()
        self.tables, self._table, self._cell = {}, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs)["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table is not None:
            self._table[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_every_figure_is_embedded_and_written(sweep_report):
    out, plots, text = sweep_report
    names = [p.name for p in plots]
    # No sweep of mode: it changes only with the frozen control, never with the rate held.
    assert names == ["prequential", "layers", "sweep-learning.lr", "weights-learn_lr_0.001",
                     "weights-learn_lr_0.003", "ceiling-sub-01", "voxel-map-sub-01"]
    embedded = EMBEDDED.findall(text)
    assert len(embedded) == len(plots) == text.count('<img src="data:image/png;base64,')
    for plot, data in zip(plots, embedded):
        png = base64.b64decode(data)
        assert png == plot.png == (out / f"{plot.name}.png").read_bytes()
        assert png.startswith(PNG)
        height, width, _ = matplotlib.image.imread(io.BytesIO(png)).shape
        assert 400 <= width <= 1000 and 300 <= height <= 800, (plot.name, width, height)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.png" for n in names]
                                                           + ["index.html"])
    # Every figure has a caption, and the page names its inputs.
    assert text.count("<figcaption>") == len(plots)
    assert "sweep.zarr" in text and "two learning rates and a frozen network" in text
    assert "score = mean over voxels at the best layer" in text


def test_tables_hold_the_summary_numbers(stores, sweep_report):
    _, _, text = sweep_report
    summary = summarize(stores[0], n_boot=N_BOOT, n_perm=N_PERM)
    tables = _Tables(text).tables
    variants = {row[0]: row for row in tables["variants"][1:]}
    assert sorted(variants) == ["frozen", SLOW, FAST]
    for r in summary["runs"]:
        row = variants[r["name"]]
        assert row[3] == f"{r['score']:.3f}"
        assert row[4] == f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        assert row[5] == f"{r['score_normalised']:.3f}"
        assert row[6] == r["best_layer"]
    comparisons = tables["comparisons"][1:]
    assert [(c[0], c[1]) for c in comparisons] == [(SLOW, "frozen"), (FAST, "frozen")]
    for row, c in zip(comparisons, summary["comparisons"]):
        assert row[2] == f"{c['delta']:+.3f}" and row[4] == f"{c['p']:.3f}"
        assert row[3] == f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
    alignment = tables["alignment"]
    assert len(alignment) == 1 + len(summary["alignment"]) == 3
    header = alignment[0]
    for row, a in zip(alignment[1:], summary["alignment"]):
        assert row[0] == f"{a['variant']}/{a['subject']}/seed-{a['seed']}" and row[1] == "frozen"
        for layer, v in a["layers"].items():
            assert row[header.index(layer)] == f"{v['r']:+.2f} (p={v['p']:.3f})"


def test_no_sweep_when_nothing_varies(stores, tmp_path):
    plots = build_report(stores[1], tmp_path / "single", n_boot=N_BOOT, n_perm=N_PERM)
    text = (tmp_path / "single" / "index.html").read_text(encoding="utf-8")
    assert [p.name for p in plots] == ["prequential", "layers", "ceiling-sub-01", "voxel-map-sub-01"]
    assert "sweep-" not in text and ">Sweeps<" not in text
    assert not list((tmp_path / "single").glob("sweep-*"))
    # Nothing learns here: the weight section says why its figures are missing.
    assert "No alignment" in text and text.count('<img src="data:image/png;base64,') == 4


def test_out_folder_rules(stores, sweep_report, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no earlier report"):
        build_report(stores[1], out)
    build_report(stores[1], out, force=True, n_boot=N_BOOT, n_perm=N_PERM)
    assert (out / "notes.txt").read_text() == "mine" and (out / "index.html").exists()
    for inside in (stores[1], stores[1] / "report"):
        with pytest.raises(ValueError, match=r"is \(or lies inside\) a Zarr store"):
            build_report(stores[1], inside)
    # An earlier report is replaced, figures that are gone now included.
    earlier, _, _ = sweep_report
    again = tmp_path / "again"
    again.mkdir()
    for f in earlier.iterdir():
        (again / f.name).write_bytes(f.read_bytes())
    build_report(stores[1], again, n_boot=N_BOOT, n_perm=N_PERM)
    assert not list(again.glob("sweep-*")) and not list(again.glob("weights-*"))
    assert "sweep-" not in (again / "index.html").read_text(encoding="utf-8")


def test_bad_results_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.zarr"
    open_results(empty)
    with pytest.raises(ValueError, match="holds no complete run"):
        build_report(empty, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written for a store it cannot report
    assert main(["report", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "o")]) == 2
    assert "no results store at" in capsys.readouterr().err


def test_cli_error_is_one_line(tmp_path):
    script = Path(sys.executable).with_name("cortexreplay")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from simulator.cli import main; sys.exit(main())"]
    proc = subprocess.run([*command, "report", str(tmp_path / "nothing.zarr"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cortexreplay report: error: no results store")
