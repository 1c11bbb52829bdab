"""The run modes: what network each one replays with, and whether it learns."""
import copy

import numpy as np

import pytest
import torch

from replay.store import open_recording
from simulator.modes import BRAIN_MODES, RUN_MODES, build_learner
from simulator.pretrain import load_checkpoint
from simulator.scenario import DEFAULTS


def _cfg(checkpoint, mode, **learning):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["mode"] = mode
    cfg["model"]["checkpoint"] = str(checkpoint)
    cfg["learning"].update({"lr": 3e-3, "steps_per_sound": 1, **learning})
    return cfg


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_every_mode_builds(tiny_checkpoint, tiny_recording):
    rec = open_recording(tiny_recording)
    wave = rec.audio(0)
    for mode in [m for m in RUN_MODES if m not in BRAIN_MODES]:  # those: tests/test_brain_tuning.py
        learner = build_learner(_cfg(tiny_checkpoint, mode), seed=0, recording=rec)
        features, record = learner.observe(wave, rec.sample_rate, 1.0)
        assert features["layer_1"].shape == (1, 128)
        learns = mode in ("continuous", "reset")
        assert (record.delta_w["layer_1"] > 0) == learns, mode


def test_random_is_untrained_and_seeded(tiny_checkpoint):
    start, _, _ = load_checkpoint(tiny_checkpoint)
    a = build_learner(_cfg(tiny_checkpoint, "random"), seed=1).model
    b = build_learner(_cfg(tiny_checkpoint, "random"), seed=1).model
    c = build_learner(_cfg(tiny_checkpoint, "random"), seed=2).model
    assert _same_weights(a, b) and not _same_weights(a, c) and not _same_weights(a, start)
    assert a.quantizer.temperature == start.quantizer.temperature


def test_offline_has_heard_every_sound_then_stays_frozen(tiny_checkpoint, tiny_recording):
    rec = open_recording(tiny_recording)
    start, _, _ = load_checkpoint(tiny_checkpoint)
    learner = build_learner(_cfg(tiny_checkpoint, "offline", offline_epochs=2), seed=0, recording=rec)
    assert learner.mode == "frozen" and not _same_weights(learner.model, start)
    # Two epochs of one step per stimulus, on top of the checkpoint's own steps.
    steps = {int(s["step"]) for s in learner.optimizer.state_dict()["state"].values()}
    _, state, _ = load_checkpoint(tiny_checkpoint)
    before = {int(s["step"]) for s in state["state"].values()}
    assert steps == {b + 2 * rec.n_stimuli for b in before}
    tuned = [p.detach().clone() for p in learner.model.parameters()]
    learner.observe(rec.audio(0), rec.sample_rate, 1.0)
    assert all(torch.equal(p, q) for p, q in zip(learner.model.parameters(), tuned))
    again = build_learner(_cfg(tiny_checkpoint, "offline", offline_epochs=2), seed=0, recording=rec)
    assert _same_weights(again.model, learner.model)  # deterministic per seed


def test_offline_needs_the_recording(tiny_checkpoint):
    with pytest.raises(ValueError, match="'offline' mode needs the recording"):
        build_learner(_cfg(tiny_checkpoint, "offline"), seed=0)


def test_bfloat16_autocast_runs_the_forwards_in_bf16_and_learns_in_float32(tiny_checkpoint,
                                                                         tiny_recording):
    rec = open_recording(tiny_recording)
    wave = rec.audio(0)
    plain = build_learner(_cfg(tiny_checkpoint, "continuous"), seed=0)
    cfg = _cfg(tiny_checkpoint, "continuous")
    cfg["model"]["autocast"] = "bfloat16"
    bf16 = build_learner(cfg, seed=0)
    seen = []  # the dtype a linear layer of the transformer computes in
    hook = bf16.model.wav2vec2.encoder.layers[0].feed_forward.output_dense.register_forward_hook(
        lambda module, args, out: seen.append(out.dtype))
    features, record = bf16.observe(wave, rec.sample_rate, 1.0)
    hook.remove()
    reference, _ = plain.observe(wave, rec.sample_rate, 1.0)
    assert seen and set(seen) == {torch.bfloat16}  # the feature pass and the update's forward
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert record.delta_w["layer_1"] > 0 and np.isfinite(record.loss)
    for name in reference:  # the same features, to bf16's precision
        np.testing.assert_allclose(features[name], reference[name], rtol=0.1, atol=0.1)


def test_trainable_layers_learn_alone_and_resume_the_checkpoints_optimizer(tiny_checkpoint,
                                                                           tiny_recording):
    rec = open_recording(tiny_recording)
    cfg = _cfg(tiny_checkpoint, "continuous")
    cfg["model"]["trainable_layers"] = ["layer_3", "layer_4"]
    learner = build_learner(cfg, seed=0)
    model, saved, _ = load_checkpoint(tiny_checkpoint)
    _, record = learner.observe(rec.audio(0), rec.sample_rate, 1.0)
    assert record.delta_w["layer_3"] > 0 and record.delta_w["layer_4"] > 0
    assert record.delta_w["cnn"] == 0 and record.delta_w["layer_1"] == 0 == record.delta_w["layer_2"]
    after = dict(learner.model.named_parameters())
    before = dict(model.named_parameters())
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed and all(n.startswith(("wav2vec2.encoder.layers.2.", "wav2vec2.encoder.layers.3.",
                                         "quantizer.", "project_q.", "project_hid."))
                           for n in changed)
    assert any(n.startswith("project_hid.") for n in changed)  # the loss's heads follow
    # The checkpoint's AdamW moments carried over for exactly the parameters that learn.
    names = [n for n, _ in model.named_parameters()]
    kept = [n for n, p in learner.model.named_parameters() if p.requires_grad]
    first = learner.optimizer.state_dict()["state"]
    assert len(learner.optimizer.param_groups[0]["params"]) == len(kept)
    assert first[0]["step"] == saved["state"][names.index(kept[0])]["step"] + 1


def test_unknown_trainable_layer_is_one_line(tiny_checkpoint):
    cfg = _cfg(tiny_checkpoint, "continuous")
    cfg["model"]["trainable_layers"] = ["layer_9"]
    with pytest.raises(ValueError, match=r"model.trainable_layers names \['layer_9'\]; the model "
                                         r"has \['cnn', 'layer_1'"):
        build_learner(cfg, seed=0)
