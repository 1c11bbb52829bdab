"""A folder of real sound files (written with soundfile) into a stimuli store, `cortexreplay stimuli`."""
import numpy as np
import pytest
import soundfile

from replay.audio_folder import read_audio_folder
from replay.store import open_recording
from simulator.cli import main


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "sounds"
    (root / "music").mkdir(parents=True)
    soundfile.write(root / "music" / "b.wav", 0.1 * rng.standard_normal(32000), 16000)
    soundfile.write(root / "a.flac", 0.1 * rng.standard_normal((8000, 2)), 8000)  # stereo
    (root / "notes.txt").write_text("not a sound")
    return root


def test_a_folder_is_read_in_sorted_order_at_one_rate(folder):
    waves, rate, names, categories = read_audio_folder(folder, 16000)
    assert names == ["a", "music/b"] and categories == ["unknown", "music"] and rate == 16000
    assert [len(w) for w in waves] == [16000, 32000] and all(w.dtype == np.float32 for w in waves)


def test_stimuli_command_writes_a_store_and_prints_each_index(folder, tmp_path, capsys):
    assert main(["stimuli", str(folder), "--out", str(tmp_path / "s.zarr")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["stimulus,name,category,seconds", "0,a,unknown,1.000", "1,music/b,music,2.000"]
    store = open_recording(tmp_path / "s.zarr")
    assert store.stimulus_names == ["a", "music/b"] and store.sample_rate == 8000
    stereo, _ = soundfile.read(folder / "a.flac", dtype="float32")
    np.testing.assert_allclose(store.audio(0), stereo.mean(axis=1), atol=1e-6)


def test_bad_folders_get_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.wav").write_bytes(b"not a wav file")
    (tmp_path / "short").mkdir()
    soundfile.write(tmp_path / "short" / "click.wav", np.ones(100), 16000)
    for folder, message, extra in (
            (tmp_path / "missing", "is not a folder of sound files", []),
            (tmp_path / "empty", "cannot read", []),
            (tmp_path / "short", "1 sound(s) shorter than 25 ms", []),
            (tmp_path / "short", "--sample-rate must be a positive number of Hz", ["--sample-rate", "0"])):
        assert main(["stimuli", str(folder), "--out", str(tmp_path / "s.zarr"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.zarr").exists()
