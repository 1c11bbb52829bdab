"""The generic importer on real files: numpy .npy frames, events CSVs, WAV sounds (soundfile)."""
import numpy as np
import pytest
import soundfile

from replay.importers import import_generic
from replay.store import open_recording, validate
from replay.trials import replay_session
from simulator.cli import main

N_FRAMES, N_VOX = 80, 6  # 40 s at 2 Hz


@pytest.fixture
def files(tmp_path):
    sounds = tmp_path / "sounds"
    (sounds / "animals").mkdir(parents=True)
    rng = np.random.default_rng(0)
    soundfile.write(sounds / "tone.wav", 0.1 * rng.standard_normal(16000), 16000)          # 1 s
    soundfile.write(sounds / "animals" / "dog.flac", 0.1 * rng.standard_normal((24000, 2)), 16000)  # 1.5 s
    sessions = []
    for k in range(2):
        Y = (np.arange(N_FRAMES)[:, None] + 100 * np.arange(N_VOX) + 10000 * k).astype(np.float64)
        np.save(tmp_path / f"run{k + 1}.npy", Y)
        sessions.append(tmp_path / f"run{k + 1}.npy")
    (tmp_path / "run1.csv").write_text("onset_s,stimulus,duration_s\n2,tone,\n10,animals/dog,1.0\n20,tone.wav,\n")
    (tmp_path / "run2.csv").write_text("onset_s,stimulus,repeat\n0.5,dog,3\n30,tone,0\n")
    np.save(tmp_path / "coords.npy", rng.standard_normal((N_VOX, 3)))
    (tmp_path / "regions.txt").write_text("A1\nA1\nPEG\nPEG\nPSF\nPSF\n")
    return tmp_path, sounds, sessions, [tmp_path / "run1.csv", tmp_path / "run2.csv"]


def test_round_trip_frames_events_and_voxels(files):
    tmp, sounds, responses, events = files
    summary = import_generic(tmp / "rec.zarr", sounds, responses, events, frame_rate_hz=2.0, modality="fmri",
                             subject="ferret-A", coords=tmp / "coords.npy", regions=tmp / "regions.txt")
    assert (summary.sessions, summary.events, summary.stimuli) == (2, 5, 2)
    validate(tmp / "rec.zarr")
    rec = open_recording(tmp / "rec.zarr")
    assert rec.modality == "fmri" and rec.subjects == ["ferret-A"] and rec.sessions("ferret-A") == ["run1", "run2"]
    assert rec.stimulus_names == ["animals/dog", "tone"] and rec.categories == ["animals", "unknown"]
    np.testing.assert_array_equal(rec.responses("ferret-A", "run2")[:], np.load(responses[1]).astype(np.float32))
    np.testing.assert_allclose(rec.voxel_coords("ferret-A"), np.load(tmp / "coords.npy"), rtol=1e-6)
    assert rec.regions("ferret-A").tolist() == ["A1", "A1", "PEG", "PEG", "PSF", "PSF"]
    ev = rec.events("ferret-A", "run1")
    assert ev.onset_s.tolist() == [2, 10, 20] and ev.stimulus.tolist() == [1, 0, 1]
    assert ev.duration_s.tolist() == [1.0, 1.0, 1.0] and ev.repeat.tolist() == [0, 0, 1]   # counted
    ev = rec.events("ferret-A", "run2")
    assert ev.duration_s.tolist() == [1.5, 1.0] and ev.repeat.tolist() == [3, 0]            # given
    stereo, _ = soundfile.read(sounds / "animals" / "dog.flac", dtype="float32")
    np.testing.assert_allclose(rec.audio(0), stereo.mean(axis=1), atol=1e-6)

    trials = list(replay_session(rec, "ferret-A", "run1", tail_s=2.0))
    assert [t.name for t in trials] == ["tone", "animals/dog", "tone"]
    # onset 10 s at 2 Hz: frame 20; 1 s of sound + 2 s of tail: 6 frames
    np.testing.assert_array_equal(trials[1].frames, np.load(responses[0])[20:26].astype(np.float32))


def test_defaults_give_index_coordinates_and_unlabelled_regions(files):
    tmp, sounds, responses, events = files
    import_generic(tmp / "rec.zarr", sounds, responses[:1], events[:1], frame_rate_hz=2.0, modality="fus")
    rec = open_recording(tmp / "rec.zarr")
    assert rec.voxel_coords("sub-01")[:, 0].tolist() == list(range(N_VOX)) and not rec.voxel_coords("sub-01")[:, 1:].any()
    assert rec.regions("sub-01").tolist() == ["unlabelled"] * N_VOX and rec.modality == "fus"


@pytest.mark.parametrize("csv, message", [
    ("onset_s,stimulus\n2,tone\n1,tone\n", r"events run1.csv: row 3, column 'onset_s': 1 comes after 2; rows are "
                                           r"presentations in the order heard: sort them by onset_s"),
    ("onset_s,stimulus\n2,cat\n", r"events run1.csv, row 2: sound 'cat' names no file .*e.g. 'animals/dog'"),
    ("onset_s,sound\n2,tone\n", r"events run1.csv: missing column\(s\) 'stimulus'; it has \['onset_s', 'sound'\]"),
    ("onset_s,stimulus\n45,tone\n", r"row 2, column 'onset_s': 45 s is outside the session \(0-40 s: 80 frames at 2 Hz\)"),
    ("onset_s,stimulus,duration_s\n39,tone,3\n", r"row 2, column 'duration_s': the sound plays 39-42 s, outside "
                                                 r"the session's 0-40 s"),
    ("onset_s,stimulus\nsoon,tone\n", r"row 2, column 'onset_s': 'soon' is not a number"),
    ("onset_s,stimulus\n", r"events run1.csv: no events \(only a header\)"),
])
def test_malformed_events_are_refused_by_row(files, csv, message):
    tmp, sounds, responses, events = files
    events[0].write_text(csv)
    with pytest.raises(ValueError, match=message):
        import_generic(tmp / "rec.zarr", sounds, responses, events, frame_rate_hz=2.0, modality="fus")
    assert not list(tmp.glob("rec.zarr*"))


def test_malformed_arrays_are_refused(files):
    tmp, sounds, responses, events = files
    kw = dict(frame_rate_hz=2.0, modality="fus")
    np.save(responses[1], np.zeros((N_FRAMES, N_VOX + 1)))
    with pytest.raises(ValueError, match=r"run2.npy: 7 voxels, but run1.npy has 6; every session of a subject"):
        import_generic(tmp / "rec.zarr", sounds, responses, events, **kw)
    np.save(responses[1], np.zeros(N_FRAMES))
    with pytest.raises(ValueError, match=r"run2.npy: responses of shape \(80,\) and dtype float64; expected real "
                                         r"numbers of shape \(n_frames, n_voxels\)"):
        import_generic(tmp / "rec.zarr", sounds, responses, events, **kw)
    with pytest.raises(ValueError, match=r"got 2 responses file\(s\) and 1 events file\(s\); give one events CSV "
                                         r"per responses .npy"):
        import_generic(tmp / "rec.zarr", sounds, responses, events[:1], **kw)
    np.save(tmp / "coords.npy", np.zeros((N_VOX, 2)))
    with pytest.raises(ValueError, match=r"coords coords.npy: shape \(6, 2\), but the responses have 6 voxels; "
                                         r"expected \(6, 3\)"):
        import_generic(tmp / "rec.zarr", sounds, responses[:1], events[:1], coords=tmp / "coords.npy", **kw)
    (tmp / "regions.txt").write_text("A1\n")
    with pytest.raises(ValueError, match=r"regions regions.txt: 1 labels, but the responses have 6 voxels"):
        import_generic(tmp / "rec.zarr", sounds, responses[:1], events[:1], regions=tmp / "regions.txt", **kw)
    (tmp / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"bad.npy: not a numpy .npy array"):
        import_generic(tmp / "rec.zarr", sounds, [tmp / "bad.npy"], events[:1], **kw)
    with pytest.raises(ValueError, match=r"Invalid value for the 'modality' parameter. Allowed values are 'fus' "
                                         r"and 'fmri', but got 'eeg' instead."):
        import_generic(tmp / "rec.zarr", sounds, responses[:1], events[:1], frame_rate_hz=2.0, modality="eeg")
    with pytest.raises(ValueError, match=r"'frame_rate_hz' parameter. Allowed values are positive numbers \(Hz\), "
                                         r"but got 0"):
        import_generic(tmp / "rec.zarr", sounds, responses[:1], events[:1], frame_rate_hz=0, modality="fus")
    assert not list(tmp.glob("rec.zarr*"))


def test_cli_imports_inspects_and_fails_in_one_line(files, capsys):
    tmp, sounds, responses, events = files
    out = tmp / "rec.zarr"
    argv = ["import", "generic", "--sounds", str(sounds), "--responses", *map(str, responses),
            "--events", *map(str, events), "--frame-rate", "2", "--modality", "fmri", "--out", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"import generic: wrote {out}: 1 subject(s), 2 session(s), 5 events of 2 stimuli"
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "session run1: 80 frames at 2 Hz (40.0 s), 3 events of 2 stimuli" in shown
    assert "stimuli: 2 at 16000 Hz, durations 1.00-1.50 s" in shown
    events[1].write_text("onset_s,stimulus\n1,nothing\n")
    assert main(argv + ["--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cortexreplay import: error: events run2.csv, row 2: sound 'nothing' names no file")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert len(open_recording(out).events("sub-01", "run2")) == 2  # the earlier store is untouched
