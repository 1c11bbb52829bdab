"""Runs sent to a real Dask cluster (a scheduler and 2 worker processes on this machine), through
`cortexreplay run --cluster`: the same results as the local pool, and a sweep interrupted on the
cluster resumes there."""
import logging
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from distributed import LocalCluster

from simulator.cli import main

from test_end_to_end import SCENARIO, _command
from test_resume import _checkpointed_at, _comparable

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as running:
        yield running.scheduler_address


def _argv(tmp, recording, checkpoint, results, *extra):
    scenario = tmp / "cluster.toml"
    scenario.write_text(SCENARIO)
    return ["run", str(scenario), "--store", str(recording), "--results", str(results),
            "--set", f"model.checkpoint={checkpoint}", "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_recording, tiny_checkpoint):
    """The scenario run by the local process pool."""
    tmp = tmp_path_factory.mktemp("local")
    assert main(_argv(tmp, tiny_recording, tiny_checkpoint, tmp / "res.zarr", "--jobs", "2")) == 0
    return _comparable(tmp / "res.zarr")


def test_a_cluster_run_equals_the_local_run(tmp_path, tiny_recording, tiny_checkpoint, cluster,
                                            reference):
    argv = _argv(tmp_path, tiny_recording, tiny_checkpoint, tmp_path / "res.zarr", "--cluster",
                 cluster)
    proc = subprocess.run([*_command(), *argv], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 run(s) on Dask at" in proc.stdout and "(2 worker(s), 2 thread(s))" in proc.stdout
    got = _comparable(tmp_path / "res.zarr")
    assert sorted(got) == sorted(reference)
    for key, value in reference.items():  # each worker ran its own encoder service: same numbers
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert not list((tmp_path / "res.zarr" / "checkpoints").glob("*.safetensors"))


def test_a_sweep_interrupted_on_the_cluster_resumes_there(tmp_path, tiny_recording,
                                                          tiny_checkpoint, cluster, reference):
    results = tmp_path / "res.zarr"
    argv = _argv(tmp_path, tiny_recording, tiny_checkpoint, results, "--cluster", cluster,
                 "--checkpoint-every", "2")
    proc = subprocess.Popen([*_command(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while _checkpointed_at(results) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the workers' tasks stop at their next trial
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert list((results / "checkpoints").glob("*.safetensors")), "the checkpoints are kept"
    refused = subprocess.run([*_command(), *argv], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "pass --resume to continue it" in refused.stderr
    resumed = subprocess.run([*_command(), *argv, "--resume"], capture_output=True, text=True,
                             timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumes at trial" in resumed.stdout
    got = _comparable(results)
    assert sorted(got) == sorted(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert not list((results / "checkpoints").glob("*.safetensors"))


def test_no_scheduler_at_the_address_is_one_line(tmp_path, tiny_recording, tiny_checkpoint):
    argv = _argv(tmp_path, tiny_recording, tiny_checkpoint, tmp_path / "res.zarr", "--cluster",
                 "tcp://127.0.0.1:9")
    proc = subprocess.run([*_command(), *argv, "--set", "seeds=[0]"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "no Dask scheduler answered" in proc.stderr
