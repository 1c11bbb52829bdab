"""The BIDS importer on a real tiny BIDS dataset: NIfTI runs (nibabel), events.tsv, sidecar JSON."""
import json

import nibabel
import numpy as np
import pytest
import soundfile

from replay.importers import import_bids
from replay.store import open_recording, validate
from replay.trials import replay_session
from simulator.cli import main

SHAPE, N_VOL = (4, 3, 2), 20
AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, 5], [0, 0, 3.0, 0], [0, 0, 0, 1]])


def bold(offset):
    """Volumes whose every value tells voxel and volume; a zero background outside 18 voxels."""
    data = np.zeros(SHAPE + (N_VOL,), dtype=np.float32)
    brain = np.arange(np.prod(SHAPE)).reshape(SHAPE) < 18
    data[brain] = offset + 100 * np.arange(1, 19)[:, None] + np.arange(N_VOL)
    return data


def write_run(func, name, offset, events, tr=None):
    func.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(bold(offset), AFFINE), func / f"{name}_bold.nii.gz")
    (func / f"{name}_events.tsv").write_text("\n".join("\t".join(map(str, row)) for row in events) + "\n")
    if tr is not None:
        (func / f"{name}_bold.json").write_text(json.dumps({"RepetitionTime": tr}))


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "bids"
    (root / "stimuli" / "music").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, seconds in (("a.wav", 2.0), ("b.wav", 3.0), ("music/c.wav", 1.0)):
        soundfile.write(root / "stimuli" / name, 0.1 * rng.standard_normal(int(8000 * seconds)), 8000)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    (root / "task-listen_bold.json").write_text(json.dumps({"RepetitionTime": 1.5, "TaskName": "listen"}))
    head = ("onset", "duration", "trial_type", "stim_file")
    write_run(root / "sub-01" / "ses-01" / "func", "sub-01_ses-01_task-listen_run-1", 0,
              [head, (9.0, 3.0, "sound", "b.wav"), (1.5, "n/a", "sound", "a.wav"), (4.0, 0.1, "press", "n/a"),
               (15.0, 2.0, "sound", "a.wav")])
    write_run(root / "sub-01" / "ses-01" / "func", "sub-01_ses-01_task-listen_run-2", 10000,
              [head, (0.0, 1.0, "sound", "music/c.wav"), (27.0, 5.0, "sound", "b.wav")])
    # sub-02's own sidecar overrides the root's TR (BIDS inheritance)
    write_run(root / "sub-02" / "func", "sub-02_task-listen", 20000, [head, (4.0, 2.0, "sound", "a.wav")], tr=2.0)
    write_run(root / "sub-01" / "ses-01" / "func", "sub-01_ses-01_task-rest", 30000,
              [("onset", "duration"), (0.0, 30.0)], tr=1.5)
    return root


def test_round_trip_every_run_a_session_every_subject_a_subject(dataset, tmp_path):
    summary = import_bids(tmp_path / "rec.zarr", dataset, tasks=["listen"])
    assert (summary.subjects, summary.sessions, summary.events, summary.stimuli) == (2, 3, 6, 3)
    assert summary.notes == ["sub-01_ses-01_task-listen_run-2_bold.nii.gz: 1 event(s) run past the last "
                             "volume; cut at it"]
    validate(tmp_path / "rec.zarr")
    rec = open_recording(tmp_path / "rec.zarr")
    assert rec.modality == "fmri" and rec.subjects == ["sub-01", "sub-02"]
    assert rec.sessions("sub-01") == ["ses-01_run-1", "ses-01_run-2"] and rec.sessions("sub-02") == ["task-listen"]
    assert rec.frame_rate("sub-01", "ses-01_run-1") == pytest.approx(1 / 1.5)
    assert rec.frame_rate("sub-02", "task-listen") == pytest.approx(0.5)
    brain = np.arange(np.prod(SHAPE)).reshape(SHAPE) < 18
    np.testing.assert_array_equal(rec.responses("sub-01", "ses-01_run-2")[:], bold(10000)[brain].T)
    np.testing.assert_allclose(rec.voxel_coords("sub-01"),
                               nibabel.affines.apply_affine(AFFINE, np.argwhere(brain)), atol=1e-5)
    assert rec.regions("sub-01").tolist() == ["brain"] * 18
    assert rec.stimulus_names == ["a", "b", "music/c"] and rec.categories == ["unknown", "unknown", "music"]
    ev = rec.events("sub-01", "ses-01_run-1")  # sorted by onset; the button press (n/a) left out
    assert ev.onset_s.tolist() == [1.5, 9.0, 15.0] and ev.stimulus.tolist() == [0, 1, 0]
    assert ev.duration_s.tolist() == [2.0, 3.0, 2.0] and ev.repeat.tolist() == [0, 0, 1]
    assert rec.events("sub-01", "ses-01_run-2").duration_s.tolist() == [1.0, 3.0]  # cut at 30 s

    trials = list(replay_session(rec, "sub-01", "ses-01_run-1", tail_s=3.0))
    assert [t.name for t in trials] == ["a", "b", "a"]
    # onset 9 s at TR 1.5: volume 6; 3 s of sound + 3 s of tail: 4 volumes
    np.testing.assert_array_equal(trials[1].frames, bold(0)[brain].T[6:10])
    assert trials[1].frame_rate == pytest.approx(1 / 1.5)


def test_a_mask_through_nilearn(dataset, tmp_path):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1, 2, 0] = mask[0, 0, 1] = mask[3, 1, 0] = 1
    nibabel.save(nibabel.Nifti1Image(mask, AFFINE), tmp_path / "sub-01_mask.nii.gz")
    import_bids(tmp_path / "rec.zarr", dataset, subjects=["sub-01"], tasks=["listen"],
                mask=tmp_path / "sub-{subject}_mask.nii.gz")  # one mask per subject
    rec = open_recording(tmp_path / "rec.zarr")
    assert rec.subjects == ["sub-01"]
    np.testing.assert_array_equal(rec.responses("sub-01", "ses-01_run-1")[:], bold(0)[mask == 1].T)
    np.testing.assert_allclose(rec.voxel_coords("sub-01"),
                               nibabel.affines.apply_affine(AFFINE, np.argwhere(mask == 1)), atol=1e-5)


def test_an_atlas_gives_one_target_per_parcel(dataset, tmp_path):
    atlas = np.zeros(SHAPE, dtype=np.int16)
    atlas[:2] = 3
    atlas[2:, :, 1] = 7
    atlas[3, 2, 0] = 5
    nibabel.save(nibabel.Nifti1Image(atlas, AFFINE), tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.tsv").write_text("index\tname\n3\tHeschl\n5\tPT\n7\tSTG\n")
    import_bids(tmp_path / "rec.zarr", dataset, subjects=["01"], tasks=["task-listen"],
                atlas=tmp_path / "atlas.nii.gz", atlas_labels=tmp_path / "atlas.tsv")
    rec = open_recording(tmp_path / "rec.zarr")
    Y, data = rec.responses("sub-01", "ses-01_run-1")[:], bold(0)
    assert Y.shape == (N_VOL, 3) and rec.regions("sub-01").tolist() == ["Heschl", "PT", "STG"]
    for j, label in enumerate([3, 5, 7]):
        np.testing.assert_allclose(Y[:, j], data[atlas == label].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(rec.voxel_coords("sub-01")[1], nibabel.affines.apply_affine(AFFINE, [3, 2, 0]))


def test_malformed_datasets_are_refused_naming_the_fix(dataset, tmp_path):
    out = tmp_path / "rec.zarr"
    listen = {"tasks": ["listen"]}
    with pytest.raises(ValueError, match=r"Invalid value for the 'subjects' parameter. Allowed values are "
                                         r"\['01', '02'\] \(in bids\), but got \['03'\]"):
        import_bids(out, dataset, subjects=["03"])
    rest = dataset / "sub-01" / "ses-01" / "func" / "sub-01_ses-01_task-rest_events.tsv"
    rest.rename(tmp_path / "rest.tsv")
    with pytest.raises(FileNotFoundError, match=r"sub-01_ses-01_task-rest_bold.nii.gz: no events file "
                                                r"sub-01_ses-01_task-rest_events.tsv beside it.*tasks="):
        import_bids(out, dataset)
    (tmp_path / "rest.tsv").rename(rest)
    bad = np.zeros((4, 3, 3), dtype=np.uint8)
    bad[0, 0, 0] = 1
    nibabel.save(nibabel.Nifti1Image(bad, AFFINE), tmp_path / "mask.nii.gz")
    with pytest.raises(ValueError, match=r"mask mask.nii.gz: shape \(4, 3, 3\), but the BOLD run "
                                         r"sub-01_ses-01_task-listen_run-1_bold.nii.gz has a \(4, 3, 2\) grid; "
                                         r"resample the mask to it"):
        import_bids(out, dataset, mask=tmp_path / "mask.nii.gz", **listen)
    nibabel.save(nibabel.Nifti1Image(bad[:, :, :2], np.eye(4)), tmp_path / "mask.nii.gz")
    with pytest.raises(ValueError, match=r"mask mask.nii.gz: its affine differs from the BOLD run"):
        import_bids(out, dataset, mask=tmp_path / "mask.nii.gz", **listen)
    with pytest.raises(ValueError, match=r"give a mask or an atlas, not both"):
        import_bids(out, dataset, mask=tmp_path / "mask.nii.gz", atlas=tmp_path / "mask.nii.gz")
    run2 = dataset / "sub-01" / "ses-01" / "func" / "sub-01_ses-01_task-listen_run-2_bold.nii.gz"
    nibabel.save(nibabel.Nifti1Image(bold(0)[:3], AFFINE), run2)
    with pytest.raises(ValueError, match=r"run-2_bold.nii.gz: its grid \(3, 3, 2\) differs from "
                                         r"sub-01_ses-01_task-listen_run-1_bold.nii.gz's \(4, 3, 2\)"):
        import_bids(out, dataset, **listen)
    run2.unlink()
    events = dataset / "sub-02" / "func" / "sub-02_task-listen_events.tsv"
    events.write_text("onset\tduration\tstim_file\n4.0\t2.0\tzzz.wav\n")
    with pytest.raises(ValueError, match=r"events sub-02_task-listen_events.tsv, row 2: sound 'zzz.wav' names no file"):
        import_bids(out, dataset, **listen)
    events.write_text("onset\tduration\tstim_file\n44.0\t2.0\ta.wav\n")
    with pytest.raises(ValueError, match=r"row 2, column 'onset': 44 s is outside the run \(0-40 s: 20 volumes of 2 s\)"):
        import_bids(out, dataset, **listen)
    events.write_text("onset\tstim_file\n4.0\ta.wav\n")
    with pytest.raises(ValueError, match=r"events sub-02_task-listen_events.tsv: missing column\(s\) 'duration'"):
        import_bids(out, dataset, **listen)
    (dataset / "sub-02" / "func" / "sub-02_task-listen_bold.json").write_text(json.dumps({"TaskName": "listen"}))
    (dataset / "task-listen_bold.json").unlink()
    with pytest.raises(ValueError, match=r"sub-01_ses-01_task-listen_run-1_bold.nii.gz: no RepetitionTime in its "
                                         r"sidecar JSON \(no sidecar found.*add \"RepetitionTime\""):
        import_bids(out, dataset, **listen)
    with pytest.raises(ValueError, match=r"no run of bids has events with a stim_file"):
        import_bids(out, dataset, tasks=["rest"])
    assert not list(tmp_path.glob("rec.zarr*"))


def test_cli_imports_inspects_and_fails_in_one_line(dataset, tmp_path, capsys):
    out = tmp_path / "rec.zarr"
    assert main(["import", "bids", str(dataset), "--tasks", "listen", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"import bids: wrote {out}: 2 subject(s), 3 session(s), 6 events of 3 stimuli"
    assert captured.err.startswith("import bids: note: sub-01_ses-01_task-listen_run-2_bold.nii.gz: 1 event(s)")
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "modality fmri" in shown and "subject sub-01: 18 voxels; regions: brain 18" in shown
    assert "session ses-01_run-1: 20 frames at 0.666667 Hz (30.0 s), 3 events of 2 stimuli" in shown
    assert main(["import", "bids", str(dataset), "--tasks", "listen", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cortexreplay import: error: ") and "pass --force" in err and err.count("\n") == 1
    assert main(["import", "bids", str(dataset), "--out", str(tmp_path / "other.zarr"),
                 "--atlas", str(dataset / "task-listen_bold.json")]) == 2
    err = capsys.readouterr().err
    assert "task-listen_bold.json: cannot read it as NIfTI" in err and err.count("\n") == 1 and "Traceback" not in err
