"""Tests of the recording store: round trip, chunked appends, validation messages, describe."""

import numpy as np
import pytest
import zarr

from replay.store import (FORMAT, STORE_VERSION, RecordingWriter, StoreError, describe,
                          open_recording, validate)

N_VOXELS, N_FRAMES, RATE = 7, 50, 2.0


def make_data(seed=0):
    """Three sounds of unequal lengths, two subjects' voxels, one session of frames and events."""
    rng = np.random.default_rng(seed)
    audio = [rng.standard_normal(n).astype(np.float32) for n in (40, 25, 33)]
    coords = rng.uniform(0, 10, (N_VOXELS, 3)).astype(np.float32)
    regions = ["A1"] * 4 + ["PEG"] * 3
    responses = rng.standard_normal((N_FRAMES, N_VOXELS)).astype(np.float32)
    events = dict(onset_s=[1.0, 6.0, 11.0, 16.0], stimulus=[2, 0, 1, 2],
                  duration_s=[4.0, 4.0, 4.0, 9.0], repeat=[0, 0, 0, 1])
    return audio, coords, regions, responses, events


def write_store(path, seed=0, chunk_frames=8, **changes):
    """Write a valid store; ``changes`` replace one of the inputs to build a broken store."""
    audio, coords, regions, responses, events = make_data(seed)
    events = {**events, **changes.pop("events", {})}
    responses = changes.pop("responses", responses)
    with RecordingWriter(path, modality="fmri") as w:
        w.write_stimuli(audio, sample_rate=10, names=["x", "y", "z"], categories=["speech", "music", "speech"])
        w.write_voxels("s1", coords, regions)
        w.write_session("s1", 0, responses, RATE, events, chunk_frames=chunk_frames)
        w.attrs["truth"] = {"snr": 1.5}
    return audio, coords, regions, responses, events


def test_round_trip(tmp_path):
    audio, coords, regions, responses, events = write_store(tmp_path / "rec.zarr")
    rec = open_recording(tmp_path / "rec.zarr")
    assert (rec.modality, rec.sample_rate, rec.n_stimuli) == ("fmri", 10, 3)
    assert rec.stimulus_names == ["x", "y", "z"] and rec.categories == ["speech", "music", "speech"]
    assert rec.subjects == ["s1"] and rec.sessions("s1") == ["0"]
    for i, a in enumerate(audio):
        assert rec.audio(i).dtype == np.float32
        np.testing.assert_array_equal(rec.audio(i), a)
    r = rec.responses("s1", 0)
    assert isinstance(r, zarr.Array) and isinstance(r[3:9], np.ndarray)
    np.testing.assert_array_equal(r[:], responses)
    assert rec.frame_rate("s1", "0") == RATE
    ev = rec.events("s1", 0)
    assert len(ev) == 4 and ev.stimulus.dtype == np.int64 and ev.onset_s.dtype == np.float64
    for k, v in events.items():
        np.testing.assert_array_equal(getattr(ev, k), v)
    np.testing.assert_array_equal(rec.voxel_coords("s1"), coords)
    assert list(rec.regions("s1")) == regions
    assert rec.attrs["format"] == FORMAT and rec.attrs["version"] == STORE_VERSION
    assert rec.attrs["truth"] == {"snr": 1.5}
    with pytest.raises(StoreError, match=r"unknown subject 's9'; the store has subjects \['s1'\]"):
        rec.responses("s9", 0)
    with pytest.raises(StoreError, match=r"stimulus 3 out of range; the store has 3 stimuli \(indices 0-2\)"):
        rec.audio(3)


def test_dimension_names(tmp_path):
    write_store(tmp_path / "rec.zarr")
    root = zarr.open_group(tmp_path / "rec.zarr", mode="r")
    expected = {"stimuli/audio": ("stimulus", "sample"), "stimuli/lengths": ("stimulus",),
                "subjects/s1/voxels/coords": ("voxel", "xyz"),
                "subjects/s1/sessions/0/responses": ("frame", "voxel"),
                "subjects/s1/sessions/0/events/onset_s": ("event",),
                "subjects/s1/sessions/0/events/repeat": ("event",)}
    for key, dims in expected.items():
        assert root[key].metadata.dimension_names == dims, key


def test_chunked_appends_equal_one_write(tmp_path):
    _, coords, _, responses, events = make_data(seed=1)
    with RecordingWriter(tmp_path / "a.zarr") as w:
        w.write_stimuli(np.ones((3, 16)), sample_rate=8)  # silence a played sound would be refused
        w.write_voxels("s1", coords)
        session = w.open_session("s1", "0", N_VOXELS, RATE, chunk_frames=8)
        sizes = [1, 3, 8, 13, 0, 2, 10, 13]  # sums to N_FRAMES, crossing chunk edges unevenly
        assert sum(sizes) == N_FRAMES
        edges = np.cumsum([0] + sizes)
        for lo, hi in zip(edges[:-1], edges[1:]):
            session.append(responses[lo:hi])
            # Only whole chunks reach the store; the rest waits in the buffer.
            assert session.responses.shape[0] == hi // 8 * 8 and session.n_frames == hi
        session.append(responses[-1])  # a single (n_voxels,) frame is accepted too
        session.set_events(**events)
    # RecordingWriter.close() closed the session and flushed its partial last chunk.
    rec = open_recording(tmp_path / "a.zarr")
    expected = np.vstack([responses, responses[-1:]])
    np.testing.assert_array_equal(rec.responses("s1", "0")[:], expected)
    assert rec.responses("s1", "0").chunks == (8, N_VOXELS)
    write_store(tmp_path / "b.zarr", seed=1)
    np.testing.assert_array_equal(open_recording(tmp_path / "b.zarr").responses("s1", 0)[:], responses)


def test_two_dimensional_audio_and_session_order(tmp_path):
    audio = np.arange(12, dtype=np.float32).reshape(3, 4)
    with RecordingWriter(tmp_path / "rec.zarr") as w:
        w.write_stimuli(audio, sample_rate=4)
        w.write_voxels("s1", np.zeros((2, 3)))
        for k in (10, 2, "pilot"):
            w.write_session("s1", k, np.zeros((4, 2)), 1.0, dict(
                onset_s=[0.0], stimulus=[1], duration_s=[1.0], repeat=[0]))
    rec = open_recording(tmp_path / "rec.zarr")
    np.testing.assert_array_equal(rec.audio(2), audio[2])
    assert rec.stimulus_names == ["stim000", "stim001", "stim002"] and rec.categories == ["unknown"] * 3
    assert rec.sessions("s1") == ["2", "10", "pilot"]  # numbers in numeric order
    assert list(rec.regions("s1")) == ["unlabelled"] * 2


def test_writer_refuses_existing_path(tmp_path):
    write_store(tmp_path / "rec.zarr")
    with pytest.raises(StoreError, match=r"rec.zarr: path exists and is not empty; pass overwrite=True \(--force"):
        RecordingWriter(tmp_path / "rec.zarr")
    RecordingWriter(tmp_path / "rec.zarr", overwrite=True).close()
    assert not (tmp_path / "rec.zarr" / "stimuli").exists()  # old content is gone
    (tmp_path / "empty").mkdir()
    RecordingWriter(tmp_path / "empty").close()  # an empty directory is fine


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(StoreError, match="Allowed values are 'fus' and 'fmri', but got 'eeg' instead"):
        RecordingWriter(tmp_path / "x.zarr", modality="eeg")
    with RecordingWriter(tmp_path / "rec.zarr") as w:
        with pytest.raises(StoreError, match="got 2 waveforms, 1 names"):
            w.write_stimuli([np.zeros(3), np.zeros(4)], 8, names=["a"])
        with pytest.raises(StoreError, match="sample_rate must be a positive integer"):
            w.write_stimuli([np.zeros(3)], 0)
        w.write_voxels("s1", np.zeros((4, 3)))
        with pytest.raises(StoreError, match="n_voxels=5, but subject 's1' has 4 voxel coordinates"):
            w.open_session("s1", 0, 5, 1.0)
        session = w.open_session("s1", 0, 4, 1.0)
        with pytest.raises(StoreError, match=r"frames have shape \(2, 3\), but this session has 4 voxels"):
            session.append(np.zeros((2, 3)))
        with pytest.raises(StoreError, match="events: arrays have unequal lengths"):
            session.set_events([0.0], [0, 1], [1.0], [0])


@pytest.mark.parametrize("change, match", [
    (dict(events=dict(stimulus=[2, 0, 7, 2])),
     r"rec.zarr/subjects/s1/sessions/0/events/stimulus: event 2 points to stimulus 7, "
     r"but the store has 3 stimuli \(indices 0-2\)"),
    (dict(events=dict(onset_s=[1.0, -1.0, 11.0, 16.0])), r"events/onset_s: event 1 spans -1-3 s, outside"),
    (dict(events=dict(onset_s=[1.0, 6.0, 11.0, 20.0])),
     r"event 3 spans 20-29 s, outside the recording \(0-25 s, 50 frames at 2 Hz\)"),
])
def test_validate_bad_session(tmp_path, change, match):
    write_store(tmp_path / "rec.zarr", **change)
    with pytest.raises(StoreError, match=match):
        validate(tmp_path / "rec.zarr")
    with pytest.raises(StoreError, match=match):
        open_recording(tmp_path / "rec.zarr")
    open_recording(tmp_path / "rec.zarr", validate=False)  # still readable when asked


def test_validate_structure(tmp_path):
    path = tmp_path / "rec.zarr"
    with pytest.raises(StoreError, match="rec.zarr: not a Zarr group"):
        validate(path)
    write_store(path)
    validate(path)  # the untouched store is sound
    root = zarr.open_group(path, mode="r+")
    cases = [  # (key, attrs or array changes, expected message); each is undone after its check
        ("", {"format": "cortexreplay.results"}, "format attribute is 'cortexreplay.results', expected"),
        ("", {"version": 9}, "store version 9, but this cortexreplay reads version 1"),
        ("", {"modality": "eeg"}, "modality attribute is 'eeg'"),
        ("stimuli", {"sample_rate": 0}, "rec.zarr/stimuli: sample_rate attribute is 0; it must be a positive"),
        ("stimuli", {"names": ["x"]}, "names attribute has 1 entries for 3 stimuli"),
        ("subjects/s1/voxels", {"regions": ["A1"]}, "1 region labels for 7 voxels"),
        ("subjects/s1/sessions/0/responses", {"frame_rate_hz": -1.0}, "frame_rate_hz attribute is -1.0"),
    ]
    for key, attrs, match in cases:
        node = root[key] if key else root
        old = {k: node.attrs[k] for k in attrs}
        node.attrs.update(attrs)
        with pytest.raises(StoreError, match=match):
            validate(path)
        node.attrs.update(old)
    validate(path)

    # Shape mismatches and missing arrays (a fresh store for each, as they are not undone).
    ses = "subjects/s1/sessions/0"
    root.create_array("stimuli/lengths", shape=(2,), dtype="int64", overwrite=True)
    with pytest.raises(StoreError, match="stimuli/lengths: 2 lengths for 3 audio rows"):
        validate(path)
    write_store(path := tmp_path / "b.zarr")
    root = zarr.open_group(path, mode="r+")
    root.create_array("subjects/s1/voxels/coords", shape=(6, 3), dtype="float32", overwrite=True)
    root["subjects/s1/voxels"].attrs["regions"] = ["A1"] * 6
    with pytest.raises(StoreError, match=f"b.zarr/{ses}/responses: 7 voxels, but voxels/coords has 6"):
        validate(path)
    write_store(path := tmp_path / "c.zarr")
    root = zarr.open_group(path, mode="r+")
    root.create_array(f"{ses}/events/repeat", shape=(3,), dtype="int64", overwrite=True)
    with pytest.raises(StoreError, match=r"events: arrays of unequal length .*'repeat': 3"):
        validate(path)
    del root[f"{ses}/events/duration_s"]
    with pytest.raises(StoreError, match=f"c.zarr/{ses}/events/duration_s: missing array"):
        validate(path)


def test_describe(tmp_path):
    write_store(tmp_path / "rec.zarr")
    text = describe(tmp_path / "rec.zarr")
    for figure in ["cortexreplay.recording v1, modality fmri", "stimuli: 3 at 10 Hz, durations 2.50-4.00 s",
                   "categories: speech 2, music 1", "subject s1: 7 voxels; regions: A1 4, PEG 3",
                   "session 0: 50 frames at 2 Hz (25.0 s), 4 events of 3 stimuli, 2 repeat indices"]:
        assert figure in text, (figure, text)
