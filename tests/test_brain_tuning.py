"""Brain-aligned fine-tuning on a real tiny wav2vec 2.0 and a real store of three sessions whose
voxels read out the checkpoint's own deepest layer (so a head on the frozen network can fit them,
and one on a random-init network cannot as well)."""
import copy

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from replay.store import RecordingWriter, open_recording
from replay.trials import frame_window, replay_session
from simulator.brain_tuning import BrainAligner, TemporalHead, VoxelMoments, heldout_sums
from simulator.features import extract_features
from simulator.modes import alignment_sessions, build_learner, load_network
from simulator.scenario import DEFAULTS
from simulator.sounds import make_sound_set

PRE_S, SOUND_S, POST_S, N_VOXELS, PER_SESSION = 1.0, 2.0, 4.0, 12, 10


@pytest.fixture(scope="module")
def sessions_store(tmp_path_factory, tiny_checkpoint):
    """3 sessions x 10 sounds of 2 s at 1 frame/s; voxels = HRF * (layer_4 @ readout) + noise, the
    read-out of rank 3 (a few directions of the layer, as a cortex's tuning would be)."""
    model = load_network(str(tiny_checkpoint))[0]
    sounds = make_sound_set(3 * PER_SESSION, SOUND_S, seed=3)
    rng = np.random.default_rng(0)
    feats = [extract_features(model, w, 16000, 1.0)["layer_4"] for w in sounds.audio]
    mu = np.concatenate(feats).mean(0)
    sd = np.concatenate(feats).std(0) + 1e-6
    d = feats[0].shape[1]
    readout = rng.standard_normal((d, 3)) @ rng.standard_normal((3, N_VOXELS)) / np.sqrt(3 * d)
    path = tmp_path_factory.mktemp("brain") / "rec.zarr"
    period = PRE_S + SOUND_S + POST_S
    with RecordingWriter(path, modality="fmri") as w:
        w.write_stimuli(list(sounds.audio), 16000, sounds.names, sounds.categories)
        w.write_voxels("s1", np.zeros((N_VOXELS, 3)))
        for k in range(3):
            stimulus = rng.permutation(np.arange(PER_SESSION * k, PER_SESSION * (k + 1)))
            onsets = np.arange(len(stimulus)) * period + PRE_S
            timeline = np.zeros((int(len(stimulus) * period), feats[0].shape[1]), np.float32)
            for t, s in enumerate(stimulus):
                i = frame_window(onsets[t], 0, 0, 1.0, len(timeline)).start
                f = (feats[s] - mu) / sd
                timeline[i:i + len(f)] = f
            signal = lfilter([0.2, 0.5, 0.3], [1.0], timeline @ readout, axis=0)
            signal /= signal.std(0)
            frames = signal + 0.5 * rng.standard_normal(signal.shape) + k  # a session offset
            w.write_session("s1", str(k), frames, 1.0, dict(
                onset_s=onsets, stimulus=stimulus, duration_s=np.full(len(stimulus), SOUND_S),
                repeat=np.zeros(len(stimulus))))
    return open_recording(path)


def _cfg(checkpoint, mode, **alignment):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["mode"] = mode
    cfg["model"]["checkpoint"] = str(checkpoint)
    cfg["data"]["session"] = "2"
    cfg["data"]["tail_s"] = POST_S
    cfg["learning"]["lr"] = 1e-4
    cfg["alignment"].update({"epochs": 6, "patience": 2, "kernel": 3, "head_lr": 1e-2,
                             "validation_fraction": 0.25, **alignment})
    return cfg


def _r2(h):
    sst = h["sum_y2"].sum(0) - h["sum_y"].sum(0) ** 2 / h["count"].sum(0)
    return 1 - h["sse"].sum(axis=1) / sst  # (network, voxel)


def test_brain_aligned_trains_on_other_sessions_and_scores_the_held_out_one(sessions_store,
                                                                            tiny_checkpoint):
    cfg = _cfg(tiny_checkpoint, "brain-aligned", train_from="layer_3", head_lr=1e-4)
    logged = []
    learner = build_learner(cfg, 0, sessions_store, logged.append, subject="s1")
    assert learner.mode == "frozen"  # the replay of the held-out session does not learn
    assert learner.alignment["sessions"] == ["0", "1"]
    assert learner.alignment["train_trials"] + learner.alignment["validation_trials"] == 20
    assert learner.alignment["validation_trials"] == 5
    h = learner.heldout
    assert h["sse"].shape == (3, 10, N_VOXELS) and h["sum_y"].shape == (10, N_VOXELS)
    held = list(replay_session(sessions_store, "s1", "2", tail_s=POST_S))
    assert h["stimulus"].tolist() == [t.stimulus for t in held]
    r2 = _r2(h).mean(axis=1)
    aligned, frozen, random = r2
    # The voxels read out the checkpoint's layer: a head on it explains held-out sounds, one on
    # a random-init network less; fine-tuning can only keep or beat the frozen head on validation.
    assert frozen > 0.2 and aligned > 0.2, r2
    assert frozen > random + 0.1 and aligned > random + 0.1, r2
    history = learner.alignment["history"]["brain-aligned"]
    assert 0 <= history["best_epoch"] < len(history["validation"]) <= 7  # epoch 0: the ridge head
    assert history["validation"][history["best_epoch"]] == min(history["validation"])
    assert any("brain-aligned: epoch 1" in line for line in logged)
    # Fine-tuning starts from the frozen network's ridge head: it can only improve validation.
    frozen_history = learner.alignment["history"]["frozen"]
    assert frozen_history["validation"] == history["validation"][:1]
    assert min(history["validation"]) <= frozen_history["validation"][0]
    if history["best_epoch"] == 0:  # no epoch beat the ridge head: the starting network is kept
        np.testing.assert_array_equal(h["sse"][0], h["sse"][1])


def test_aligner_steps_change_the_layers_from_train_from_up_only(sessions_store, tiny_checkpoint):
    model = load_network(str(tiny_checkpoint))[0]
    start = copy.deepcopy(model.state_dict())
    aligner = BrainAligner(model, N_VOXELS, layer="layer_4", train_from="layer_3", lr=1e-3)
    torch.nn.init.normal_(aligner.head.conv.weight, std=0.1)  # a head that passes gradient back
    t = next(replay_session(sessions_store, "s1", "0", tail_s=POST_S))
    aligner.targets.update(t.frames)
    loss, norm, skipped = aligner.step(t.waveform, 16000, 1.0, t.offset_s, t.frames)
    assert np.isfinite(loss) and norm > 0 and not skipped
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    assert any(".encoder.layers.2." in k for k in moved) and any(".encoder.layers.3." in k for k in moved)
    assert not any(".encoder.layers.1." in k or "feature_extractor" in k or "quantizer" in k
                   for k in moved), sorted(moved)


def test_brain_continuous_learns_after_the_features_were_read(sessions_store, tiny_checkpoint):
    cfg = _cfg(tiny_checkpoint, "brain-continuous")
    learner = build_learner(cfg, 0, sessions_store, subject="s1")
    trials = list(replay_session(sessions_store, "s1", "2", tail_s=POST_S))
    before = extract_features(learner.model, trials[0].waveform, 16000, 1.0, trials[0].offset_s)
    losses = []
    for t in trials[:4]:
        features, record = learner.observe(t.waveform, 16000, 1.0, t.offset_s, frames=t.frames)
        losses.append(record.loss)
        if t is trials[0]:
            np.testing.assert_array_equal(features["layer_4"], before["layer_4"])
    assert np.isfinite(losses).all()
    assert record.delta_w["layer_4"] > 0 and record.delta_w["cnn"] == 0.0
    with pytest.raises(ValueError, match="brain frames"):
        learner.observe(trials[0].waveform, 16000, 1.0, frames=None)


def test_brain_continuous_resumes_exactly(sessions_store, tiny_checkpoint):
    cfg = _cfg(tiny_checkpoint, "brain-continuous")
    trials = list(replay_session(sessions_store, "s1", "2", tail_s=POST_S))[:4]
    a = build_learner(cfg, 0, sessions_store, subject="s1")
    for t in trials[:2]:
        a.observe(t.waveform, 16000, 1.0, t.offset_s, frames=t.frames)
    b = build_learner(cfg, 0, sessions_store, subject="s1")
    b.load_state_dict(a.state_dict())
    for learner in (a, b):
        for t in trials[2:]:
            learner.observe(t.waveform, 16000, 1.0, t.offset_s, frames=t.frames)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    torch.testing.assert_close(a.aligner.head.conv.weight, b.aligner.head.conv.weight, rtol=0, atol=0)


def test_alignment_sessions_refuse_the_held_out_session_and_a_lone_one(sessions_store,
                                                                       tiny_checkpoint):
    cfg = _cfg(tiny_checkpoint, "brain-aligned", sessions=["1", "2"])
    with pytest.raises(ValueError, match="held-out one and must not be trained on"):
        alignment_sessions(cfg, sessions_store, "s1")
    cfg = _cfg(tiny_checkpoint, "brain-aligned", sessions=["7"])
    with pytest.raises(ValueError, match=r"names \['7'\]"):
        alignment_sessions(cfg, sessions_store, "s1")


def test_aligner_refuses_a_layer_order_and_names_the_layers(tiny_checkpoint):
    model = load_network(str(tiny_checkpoint))[0]
    with pytest.raises(ValueError, match="lies above"):
        BrainAligner(model, 3, layer="layer_2", train_from="layer_3")
    with pytest.raises(ValueError, match="'alignment.layer' parameter.*'layer_9'"):
        BrainAligner(model, 3, layer="layer_9")


def test_head_is_causal():
    torch.manual_seed(0)
    head = TemporalHead(4, 2, kernel=3)
    torch.nn.init.normal_(head.conv.weight)
    x = torch.randn(6, 4)
    y = head(x, 8)
    x2 = x.clone()
    x2[4:] += 10.0  # a change at frame 4 cannot reach frames 0..3
    y2 = head(x2, 8)
    torch.testing.assert_close(y[:4], y2[:4])
    assert not torch.allclose(y[4:], y2[4:])


def test_voxel_moments_equal_batch_moments():
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((50, 3)) * [1.0, 2.0, 5.0] + [0.0, 1.0, -3.0]
    Y[[3, 9], 1] = np.nan
    m = VoxelMoments(3)
    for part in np.array_split(Y, 7):
        m.update(part)
    np.testing.assert_allclose(m.mean[0], np.nanmean(Y, axis=0), rtol=1e-6)
    np.testing.assert_allclose(m.scale[0], np.nanstd(Y, axis=0), rtol=1e-6)


def test_heldout_sums_pool_to_r2(sessions_store, tiny_checkpoint):
    model = load_network(str(tiny_checkpoint))[0]
    aligner = BrainAligner(model, N_VOXELS, learn_network=False)
    trials = list(replay_session(sessions_store, "s1", "2", tail_s=POST_S))
    aligner.targets.update(np.concatenate([t.frames for t in trials]))
    sums = heldout_sums(aligner, trials)
    # An untrained (zero) head predicts every voxel's mean: R² 0 on those same frames.
    Y = np.concatenate([t.frames for t in trials]).astype(np.float64)
    r2 = 1 - sums["sse"].sum(0) / (sums["sum_y2"].sum(0) - sums["sum_y"].sum(0) ** 2 / sums["count"].sum(0))
    np.testing.assert_allclose(r2, 0.0, atol=1e-5)
    assert sums["count"].sum(0).tolist() == [len(Y)] * N_VOXELS


def test_the_ridge_head_is_the_convolution_it_sets(sessions_store, tiny_checkpoint):
    from simulator.brain_tuning import _design, _features, fit_ridge_head

    model = load_network(str(tiny_checkpoint))[0]
    aligner = BrainAligner(model, N_VOXELS, learn_network=False, kernel=3)
    trials = list(replay_session(sessions_store, "s1", "0", tail_s=POST_S))
    aligner.targets.update(np.concatenate([t.frames for t in trials]))
    fit_ridge_head(aligner, trials[:7], trials[7:])
    w = aligner.head.conv.weight.detach().numpy().astype(np.float64)  # (voxel, feature, tap)
    W = w[:, :, ::-1].transpose(2, 1, 0).reshape(-1, N_VOXELS)  # lag blocks, lag 0 first
    b = aligner.head.conv.bias.detach().numpy()
    for t in trials:
        features = _features(aligner, t)
        with torch.no_grad():
            head = aligner.head(features, len(t.frames)).numpy()
        np.testing.assert_allclose(head, _design(aligner, features, len(t.frames)) @ W + b,
                                   rtol=1e-4, atol=1e-4)
