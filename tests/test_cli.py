"""`cortexreplay`: a user's mistake exits with code 2 and one line on stderr, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from simulator.cli import main
from simulator.results import open_results


def _fails(capsys, argv, command, message):
    """Run ``cortexreplay argv`` in process; check the exit code and the one-line error."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cortexreplay {command}: error: ")
    assert message in lines[0], lines[0]
    assert "Traceback" not in err + out
    return lines[0]


def _scenario(tmp_path, text="[variants.frozen]\nmode = 'frozen'\n"):
    path = tmp_path / "scen.toml"
    path.write_text(text)
    return path


def test_inspect_missing_store(tmp_path, capsys):
    _fails(capsys, ["inspect", str(tmp_path / "nope.zarr")], "inspect",
           "nope.zarr: not a Zarr group; expected a cortexreplay.recording store")


def test_run_missing_scenario(tmp_path, capsys):
    _fails(capsys, ["run", str(tmp_path / "nope.toml"), "--store", str(tmp_path / "rec.zarr")],
           "run", "nope.toml' does not exist")


def test_run_invalid_scenario_key(tmp_path, capsys):
    _fails(capsys, ["run", str(_scenario(tmp_path)), "--set", "learning.lrr=1"], "run",
           "unknown key 'learning.lrr'")


def test_run_without_a_store(tmp_path, capsys):
    _fails(capsys, ["run", str(_scenario(tmp_path))], "run",
           "no recording store: pass --store or set data.store in the scenario")


def test_run_with_a_missing_checkpoint(tmp_path, capsys, tiny_recording):
    line = _fails(capsys, ["run", str(_scenario(tmp_path)), "--store", str(tiny_recording),
                           "--results", str(tmp_path / "res.zarr"), "--set",
                           "model.checkpoint=/nonexistent", "--no-progress"],
                  "run", "cannot load a wav2vec 2.0 model from '/nonexistent'")
    assert "cortexreplay pretrain --out DIR" in line


def test_run_without_a_checkpoint(tmp_path, capsys, tiny_recording):
    _fails(capsys, ["run", str(_scenario(tmp_path)), "--store", str(tiny_recording),
                    "--results", str(tmp_path / "res.zarr"), "--no-progress"],
           "run", "model.checkpoint is not set")


def test_run_into_a_folder_that_is_not_a_results_store(tmp_path, capsys, tiny_recording,
                                                       tiny_checkpoint):
    (tmp_path / "taken").mkdir()
    _fails(capsys, ["run", str(_scenario(tmp_path)), "--store", str(tiny_recording),
                    "--set", f"model.checkpoint={tiny_checkpoint}",
                    "--results", str(tmp_path / "taken"), "--no-progress"],
           "run", "exists and is not a results store; choose another --results")


def test_summary_on_a_folder_that_is_not_a_results_store(tmp_path, capsys):
    _fails(capsys, ["summary", str(tmp_path)], "summary", "no results store at")
    zarr.open_group(str(tmp_path / "rec.zarr"), mode="w").attrs["format"] = "cortexreplay.recording"
    _fails(capsys, ["summary", str(tmp_path / "rec.zarr")], "summary",
           "is not a results store (format 'cortexreplay.recording')")


def test_summary_on_an_empty_results_store(tmp_path, capsys):
    open_results(tmp_path / "res.zarr")
    _fails(capsys, ["summary", str(tmp_path / "res.zarr")], "summary", "holds no complete run yet")


@pytest.mark.parametrize("option, message", [
    (["--sounds", "0"], "--sounds must be at least 1, got 0"),
    (["--teacher-steps", "0"], "--teacher-steps must be at least 1, got 0"),
    (["--retention", "1.5"], "0 <= --retention <= 1"),
    (["--tr", "0"], "--tr must be > 0 (seconds per frame), got 0.0"),
    (["--modality", "fmri", "--sounds", "3", "--sessions", "4"],
     "--sessions must be from 1 to --sounds (3), so that each session hears its own sounds"),
])
def test_synth_bad_settings(tmp_path, capsys, option, message):
    _fails(capsys, ["synth", "--out", str(tmp_path / "rec.zarr"), "--checkpoint", str(tmp_path),
                    *option], "synth", message)
    assert not (tmp_path / "rec.zarr").exists()


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    script = Path(sys.executable).with_name("cortexreplay")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from simulator.cli import main; sys.exit(main())"]
    proc = subprocess.run([*command, "synth", "--out", str(tmp_path / "x.zarr"), "--checkpoint",
                           str(tmp_path), "--sounds", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["cortexreplay synth: error: --sounds must be at least 1, got 0"]
    assert proc.stdout == ""


def test_failed_checkpoint_leaves_no_results_store(tmp_path, capsys, tiny_recording):
    _fails(capsys, ["run", str(_scenario(tmp_path)), "--store", str(tiny_recording),
                    "--set", f"model.checkpoint={tmp_path / 'missing'}",
                    "--results", str(tmp_path / "res.zarr"), "--no-progress"],
           "run", "no such directory, nor a cached hub model")
    assert not (tmp_path / "res.zarr").exists()


def test_synth_checks_the_read_layer_and_an_existing_store(tmp_path, capsys, tiny_checkpoint,
                                                          tiny_recording):
    base = ["synth", "--checkpoint", str(tiny_checkpoint), "--sounds", "2", "--duration", "0.5",
            "--subjects", "1", "--voxels", "4", "--repeats", "1"]
    _fails(capsys, base + ["--out", str(tmp_path / "a.zarr"), "--read-layer", "layer_9"], "synth",
           "Allowed values are 'cnn', 'layer_1', 'layer_2', 'layer_3' and 'layer_4', but got 'layer_9'")
    _fails(capsys, base + ["--out", str(tiny_recording)], "synth", "already exists; pass --force")
    assert not list(tmp_path.iterdir())  # nothing half-written was left behind


def test_a_run_failing_in_its_worker_gives_one_line(tmp_path, capsys, tiny_recording,
                                                    tiny_checkpoint):
    _fails(capsys, ["run", str(_scenario(tmp_path, "[encoder]\nlayers = ['layer_9']\n")),
                    "--store", str(tiny_recording), "--set", f"model.checkpoint={tiny_checkpoint}",
                    "--results", str(tmp_path / "res.zarr"), "--no-progress"],
           "run", "encoder.layers names ['layer_9']")


def test_validate_with_a_missing_checkpoint(tmp_path, capsys):
    _fails(capsys, ["validate", "--out", str(tmp_path / "v"), "--plan", "quick", "--checkpoint",
                    str(tmp_path / "nope")], "validate", "nope")
    assert not (tmp_path / "v").exists()  # refused before anything was made


def test_run_on_a_corrupted_store_gives_one_line_and_writes_nothing(tmp_path, capsys,
                                                                     tiny_recording, tiny_checkpoint):
    import shutil

    store = tmp_path / "rec.zarr"
    shutil.copytree(tiny_recording, store)
    chunk = sorted((store / "subjects").rglob("responses/c/*/*"))[0]
    chunk.write_bytes(b"\x00garbage")  # a chunk torn by a crash or a bad copy
    _fails(capsys, ["run", str(_scenario(tmp_path)), "--store", str(store), "--results",
                    str(tmp_path / "res.zarr"), "--set", f"model.checkpoint={tiny_checkpoint}"],
           "run", "rec.zarr/subjects/sub-01/sessions/0/responses: the chunk of frames")
    assert not (tmp_path / "res.zarr").exists()


def test_monitor_with_an_outside_encoder_is_refused(tmp_path, capsys, tiny_recording,
                                                    tiny_checkpoint):
    _fails(capsys, ["run", str(_scenario(tmp_path)), "--store", str(tiny_recording),
                    "--results", str(tmp_path / "res.zarr"), "--encoder", "tcp://127.0.0.1:1",
                    "--monitor", "tcp://127.0.0.1:2", "--set", f"model.checkpoint={tiny_checkpoint}"],
           "run", "--monitor sets up the encoder service the run starts")
