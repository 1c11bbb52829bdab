"""The fUS importer on real MATLAB files (scipy.io.savemat) in the Landemard et al. 2021 layout."""
import numpy as np
import pytest
import scipy.io
import soundfile

from replay.importers import FusLayout, import_fus
from replay.importers import fus as fus_module
from replay.store import StoreError, describe, open_recording, validate
from replay.trials import replay_session
from simulator.cli import main

N_T, N_STIM, N_REP, PRE = 6, 3, 2, 2  # 6 frames a trial at 1 Hz: 2 s silence, 2 s sound, 2 s silence
# played order: (stimulus, repetition), 1-based as in MATLAB
ORDER = [(2, 1), (1, 1), (3, 2), (1, 2), (2, 2), (3, 1)]


def din(n_vox, offset):
    """time x stimulus x repetition x voxel, each value telling where it came from."""
    t, s, r, v = np.meshgrid(np.arange(N_T), np.arange(N_STIM), np.arange(N_REP), np.arange(n_vox),
                             indexing="ij")
    return (t + 10 * r + 100 * s + 1000 * (v + offset)).astype(np.float64)


@pytest.fixture
def dataset(tmp_path):
    data = tmp_path / "fUSData"
    data.mkdir()
    mask = np.zeros((4, 5, 2), dtype=bool)
    mask[[0, 2, 1], [1, 1, 3], 0] = True                  # slice 1: 3 pixels
    mask[[3, 0], [4, 0], 1] = True                        # slice 2: 2 pixels
    param = {"msk": {"ManualMask": mask}, "exp": {"PreStimSilence": float(PRE), "nTrials": 4.0},
             "snd": {"SoundList": np.array(["cat", "speech/s1", "drum"], dtype=object)}}
    scipy.io.savemat(data / "NTL_Anat&Param.mat", {"Anat": np.ones((4, 5, 2)), "param": param})
    scipy.io.savemat(data / "NTL_1.mat", {"Din": din(3, 0), "Dout": np.zeros((N_T, N_STIM, N_REP, 2))})
    scipy.io.savemat(data / "NTL_2.mat", {"Din": din(2, 3)})
    sounds = tmp_path / "sounds"
    (sounds / "speech").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, seconds in (("cat", 2.0), ("speech/s1", 1.5), ("drum", 2.0)):
        soundfile.write(sounds / f"{name}.wav", 0.1 * rng.standard_normal(int(8000 * seconds)), 8000)
    order = tmp_path / "order.csv"
    order.write_text("stimulus,repetition\n" + "".join(f"{s},{r}\n" for s, r in ORDER))
    return data, sounds, order


def test_round_trip_places_each_presentation_in_played_order(dataset, tmp_path):
    data, sounds, order = dataset
    summary = import_fus(tmp_path / "rec.zarr", data, sounds, order)
    assert (summary.events, summary.stimuli) == (6, 3) and "not in the order table" not in str(summary.notes)
    validate(tmp_path / "rec.zarr")
    rec = open_recording(tmp_path / "rec.zarr")
    assert rec.modality == "fus" and rec.subjects == ["NTL"] and rec.sessions("NTL") == ["0"]
    Y = rec.responses("NTL", "0")[:]
    assert Y.shape == (len(ORDER) * N_T, 5) and rec.frame_rate("NTL", "0") == 1.0
    for p, (s, r) in enumerate(ORDER):
        expected = np.concatenate([din(3, 0)[:, s - 1, r - 1], din(2, 3)[:, s - 1, r - 1]], axis=1)
        np.testing.assert_array_equal(Y[p * N_T:(p + 1) * N_T], expected)
    ev = rec.events("NTL", "0")
    names = [rec.stimulus_names[i] for i in ev.stimulus]
    assert names == ["speech/s1", "cat", "drum", "cat", "speech/s1", "drum"]
    assert ev.onset_s.tolist() == [PRE + p * N_T for p in range(6)]
    assert ev.duration_s.tolist() == [1.5, 2.0, 2.0, 2.0, 1.5, 2.0]
    assert ev.repeat.tolist() == [0, 0, 0, 1, 1, 1]
    assert rec.categories[rec.stimulus_names.index("speech/s1")] == "speech"
    # pixels in MATLAB's column-major order: (row, column, slice - 1)
    assert rec.voxel_coords("NTL").tolist() == [[0, 1, 0], [2, 1, 0], [1, 3, 0], [0, 0, 1], [3, 4, 1]]
    assert rec.regions("NTL").tolist() == ["NTL"] * 5

    trials = list(replay_session(rec, "NTL", "0", tail_s=2.0))
    assert [t.stimulus for t in trials] == ev.stimulus.tolist()
    for t, (s, r) in zip(trials, ORDER):  # sound and tail: frames 2-5 of the presentation's own window
        expected = np.concatenate([din(3, 0)[:, s - 1, r - 1], din(2, 3)[:, s - 1, r - 1]], axis=1)
        np.testing.assert_array_equal(t.frames, expected[PRE:PRE + 4])
        assert t.offset_s == 0.0 and t.waveform.dtype == np.float32


def test_onsets_place_windows_and_leave_gaps_unrecorded(dataset, tmp_path):
    data, sounds, _ = dataset
    order = tmp_path / "timed.csv"
    # a 1-frame pause before the third presentation; a sound column overrides SoundList's names
    order.write_text("stimulus,repetition,onset_s,sound\n1,1,2,drum\n2,1,8,speech/s1\n1,2,15,drum\n")
    import_fus(tmp_path / "rec.zarr", data, sounds, order, sound_duration_s=3.0)
    rec = open_recording(tmp_path / "rec.zarr")
    Y = rec.responses("NTL", "0")[:]
    assert Y.shape == (3 * N_T + 1, 5) and np.isnan(Y[12]).all() and not np.isnan(np.delete(Y, 12, 0)).any()
    np.testing.assert_array_equal(Y[13:19, :3], din(3, 0)[:, 0, 1])
    ev = rec.events("NTL", "0")
    assert ev.onset_s.tolist() == [2.0, 8.0, 15.0] and ev.duration_s.tolist() == [3.0] * 3
    assert rec.stimulus_names == ["drum", "speech/s1"]


def test_a_slice_alone_and_the_presentations_left_out(dataset, tmp_path):
    data, sounds, order = dataset
    order.write_text("stimulus,repetition\n3,1\n1,2\n")
    summary = import_fus(tmp_path / "rec.zarr", data, sounds, order, slices=[2], subject="NTL-2",
                         voxel_size=(0.1, 0.1, 0.4))
    assert "4 of the 6 presentations in Din are not in the order table" in summary.notes[0]
    rec = open_recording(tmp_path / "rec.zarr")
    np.testing.assert_allclose(rec.voxel_coords("NTL-2"), [[0, 0, 0.4], [0.3, 0.4, 0.4]], atol=1e-6)
    np.testing.assert_array_equal(rec.responses("NTL-2", "0")[:N_T], din(2, 3)[:, 2, 0])


def test_without_an_order_table_it_explains_why_order_matters(dataset, tmp_path):
    data, sounds, _ = dataset
    with pytest.raises(ValueError, match="no presentation-order table .*ordered by stimulus and repetition, "
                                         "not by time.*in the order heard"):
        import_fus(tmp_path / "rec.zarr", data, sounds)
    assert not (tmp_path / "rec.zarr").exists()


@pytest.mark.parametrize("rows, message", [
    ("stimulus,repetition\n1,1\n4,1\n", r"order table order.csv: row 3, column 'stimulus': 4 is outside 1-3"),
    ("stimulus,repetition\n1,1\n1,3\n", r"row 3, column 'repetition': 3 is outside 1-2"),
    ("stimulus,repetition\n1,1\n2,1\n1,1\n", r"row 4, .*stimulus 1, repetition 1 is presented again \(first at row 2\)"),
    ("stimulus,rep\n1,1\n", r"missing column\(s\) 'repetition'; it has \['stimulus', 'rep'\]"),
    ("stimulus,repetition\n1.5,1\n", r"row 2, column 'stimulus': '1.5' is not a whole number"),
    ("stimulus,repetition,sound\n1,1,zzz\n", r"row 2: sound 'zzz' names no file"),
    ("stimulus,repetition,onset_s\n1,1,1\n", r"row 2, column 'onset_s': 1 s leaves no room for the 2 s of silence"),
    ("stimulus,repetition,onset_s\n1,1,2\n2,1,5\n", r"row 3, column 'onset_s': 5 s comes less than one trial window"),
    ("stimulus,repetition,onset_s\n1,1,2\n2,1,30\n", r"leave 22 of 34 frames between trial windows unrecorded"),
])
def test_a_malformed_order_table_is_refused_by_row(dataset, tmp_path, rows, message):
    data, sounds, order = dataset
    order.write_text(rows)
    with pytest.raises(ValueError, match=message):
        import_fus(tmp_path / "rec.zarr", data, sounds, order)
    assert not list(tmp_path.glob("rec.zarr*"))


def test_malformed_files_are_refused_naming_the_file_and_the_fix(dataset, tmp_path):
    data, sounds, order = dataset
    out = tmp_path / "rec.zarr"
    with pytest.raises(ValueError, match=r"NTL_1.mat: no variable 'D' \(it holds \['Din', 'Dout'\]\); name the "
                                         r"right one with --data-var"):
        import_fus(out, data, sounds, order, layout=FusLayout(data_var="D"))
    with pytest.raises(ValueError, match=r"Invalid value for the 'slices' parameter. Allowed values are slices "
                                         r"of NTL \(\[1, 2\]\), but got \[3\]"):
        import_fus(out, data, sounds, order, slices=[3])
    with pytest.raises(ValueError, match=r"Invalid value for the 'hemispheres' parameter.*\['NTL'\], but got \['NAR'\]"):
        import_fus(out, data, sounds, order, hemispheres=["NAR"])
    with pytest.raises(ValueError, match=r"exp has no field 'Silence' .*--pre-silence-field"):
        import_fus(out, data, sounds, order, layout=FusLayout(pre_silence_field="exp.Silence"))
    with pytest.raises(ValueError, match=r"row 2, column .stimulus.: its sound lasts 1.5 s, but the trial window of 6 s .* leaves 1 s after "
                                         r"the 5 s of silence"):
        import_fus(out, data, sounds, order, pre_silence_s=5.0)
    scipy.io.savemat(data / "NTL_2.mat", {"Din": din(4, 3)})  # 4 voxels where the mask marks 2
    with pytest.raises(ValueError, match=r"NTL_2.mat: Din has 4 voxels, but msk.ManualMask marks 2 pixels in "
                                         r"slice 2 of NTL_Anat&Param.mat"):
        import_fus(out, data, sounds, order)
    scipy.io.savemat(data / "NTL_2.mat", {"Din": din(2, 3)[:4]})  # a shorter trial window than slice 1's
    with pytest.raises(ValueError, match=r"NTL_2.mat: Din has shape \(4, 3, 2, 2\); expected \(time, stimulus, "
                                         r"repetition, voxel\), like NTL_1.mat's \(6, 3, 2\)"):
        import_fus(out, data, sounds, order)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116) + bytes(8) + b"\x00\x02IM"
    (data / "NTL_2.mat").write_bytes(header + bytes(512))
    with pytest.raises(ValueError, match=r"NTL_2.mat: a MATLAB v7.3 \(HDF5\) file, which scipy cannot read; "
                                         r"re-save it as v7"):
        import_fus(out, data, sounds, order)
    assert not list(tmp_path.glob("rec.zarr*"))


def test_sound_names_must_cover_every_stimulus(dataset, tmp_path):
    data, sounds, order = dataset
    param = {"msk": {"ManualMask": scipy.io.loadmat(data / "NTL_Anat&Param.mat")["param"]["msk"][0, 0]
                     ["ManualMask"][0, 0]}, "exp": {"PreStimSilence": 2.0},
             "snd": {"SoundList": np.array(["cat", "drum"], dtype=object)}}
    scipy.io.savemat(data / "NTL_Anat&Param.mat", {"param": param})
    with pytest.raises(ValueError, match=r"param.snd.SoundList names 2 sounds, but Din has 3 stimuli; add a "
                                         r"'sound' column to the order table order.csv"):
        import_fus(tmp_path / "rec.zarr", data, sounds, order)


def test_an_interrupted_import_leaves_no_store_and_keeps_the_old_one(dataset, tmp_path, monkeypatch):
    data, sounds, order = dataset
    out = tmp_path / "rec.zarr"
    import_fus(out, data, sounds, order)
    before = open_recording(out).responses("NTL", "0")[:]
    with pytest.raises(StoreError, match="path exists and is not empty; pass --force"):
        import_fus(out, data, sounds, order)

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(fus_module, "place_presentations", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_fus(out, data, sounds, order, force=True)
    assert not (tmp_path / "rec.zarr.partial").exists()
    np.testing.assert_array_equal(open_recording(out).responses("NTL", "0")[:], before)
    monkeypatch.undo()
    order.write_text("stimulus,repetition\n3,2\n")
    import_fus(out, data, sounds, order, force=True)
    assert len(open_recording(out).events("NTL", "0")) == 1


def test_cli_imports_and_inspect_shows_it(dataset, tmp_path, capsys):
    data, sounds, order = dataset
    out = tmp_path / "rec.zarr"
    assert main(["import", "fus", str(data), "--sounds", str(sounds), "--order", str(order),
                 "--out", str(out), "--sample-rate", "16000"]) == 0
    assert capsys.readouterr().out.strip() == f"import fus: wrote {out}: 1 subject(s), 1 session(s), 6 events of 3 stimuli"
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "modality fus" in shown and "stimuli: 3 at 16000 Hz" in shown
    assert "subject NTL: 5 voxels; regions: NTL 5" in shown
    assert "session 0: 36 frames at 1 Hz (36.0 s), 6 events of 3 stimuli, 2 repeat indices" in shown
    assert describe(out) in shown


def test_cli_errors_are_one_line(dataset, tmp_path, capsys):
    data, sounds, order = dataset
    argv = ["import", "fus", str(data), "--sounds", str(sounds), "--out", str(tmp_path / "rec.zarr")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cortexreplay import: error: no presentation-order table") and err.count("\n") == 1
    assert main(argv + ["--order", str(order), "--mask-field", "msk.Mask"]) == 2
    err = capsys.readouterr().err
    assert "msk has no field 'Mask'" in err and "--mask-field" in err and err.count("\n") == 1
    assert "Traceback" not in err and not list(tmp_path.glob("rec.zarr*"))
