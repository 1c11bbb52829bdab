"""The sweep's progress display: one bar for the sweep, one per run in progress."""
import io

from simulator.progress import SweepProgress


def test_the_sweep_bar_counts_trials_and_runs_and_each_run_has_its_own_bar():
    out = io.StringIO()
    progress = SweepProgress({"a/sub-01/seed-0": 3, "b/sub-01/seed-0": 2}, file=out)
    for r in (0.1, 0.3, float("nan")):
        progress.trial("a/sub-01/seed-0", 2.5, r)
    progress.trial("b/sub-01/seed-0", 1.0, 0.5)
    assert progress.bar.n == 4 and progress.bar.total == 5
    line = str(progress._runs["a/sub-01/seed-0"])  # one bar per run, at its own line
    assert line.startswith("a/sub-01/seed-0: ") and "3/3" in line
    assert "loss 2.500 r(20) 0.200" in line  # the NaN r of the warm-up is left out
    assert progress._runs["b/sub-01/seed-0"].pos != progress._runs["a/sub-01/seed-0"].pos
    progress.run_done("a/sub-01/seed-0")
    progress.trial("c/sub-01/seed-0", 1.0, 0.2)  # a new run takes the freed line
    assert progress._slots[0] == "c/sub-01/seed-0"
    progress.run_done("b/sub-01/seed-0")
    progress.close()
    text = out.getvalue()
    assert "runs 2/2 done" in text and "runs 0/2 done" in text


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    progress = SweepProgress({"a": 2}, enabled=False, file=out)
    progress.trial("a", 1.0, 0.1)
    progress.run_done("a")
    progress.close()
    assert out.getvalue() == ""
