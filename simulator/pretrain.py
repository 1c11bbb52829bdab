"""`cortexreplay pretrain`: the project's stand-in for a downloaded checkpoint.

Nothing may be downloaded here, so "pretrained" means a wav2vec 2.0 trained by this command on a
synthetic corpus disjoint from any recording's stimuli (its sounds come from another seed stream),
or on a folder of real audio files. The checkpoint directory holds the model
(``save_pretrained``), the AdamW state (``optimizer.pt``) that the learners carry over, and
``pretrain.json`` with the settings; a second call with the same settings reuses it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from replay.audio_folder import audio_files, read_audio

from .model import build_model, load_model
from .ssl import RandomStreams, ssl_step

# The synthetic recording draws its sounds from seed s; the pretraining corpus from s + this.
CORPUS_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that determines a checkpoint (stored in pretrain.json)."""

    size: str = "tiny"
    steps: int = 400
    lr: float = 1e-3
    warmup_steps: int = 40
    seed: int = 0
    corpus: str | None = None  # folder of audio files; None: synthetic sounds
    corpus_sounds: int = 256
    clip_s: float = 2.0
    sample_rate: int = 16000
    max_temperature: float = 2.0
    min_temperature: float = 0.5


def load_corpus(settings: PretrainSettings) -> np.ndarray:
    """(n_clips, n_samples) float32 training clips, synthetic or cut from a folder of audio."""
    n = int(round(settings.clip_s * settings.sample_rate))
    if settings.corpus is None:
        from .sounds import make_sound_set
        return make_sound_set(settings.corpus_sounds, settings.clip_s,
                              seed=settings.seed + CORPUS_SEED_OFFSET,
                              sample_rate=settings.sample_rate).audio
    return _clips_from_folder(Path(settings.corpus), n, settings.sample_rate)


def _clips_from_folder(folder: Path, n: int, sample_rate: int) -> np.ndarray:
    clips = []
    for path in audio_files(folder, "corpus folder"):
        wave, _ = read_audio(path, sample_rate)
        clips += [wave[i:i + n] for i in range(0, len(wave) - n + 1, n)]
    if not clips:
        raise ValueError(f"no audio file in {str(folder)!r} is longer than one clip of {n} samples")
    return np.stack(clips)


def pretrain(out_dir: str | Path, settings: PretrainSettings = PretrainSettings(),
             log=print) -> Path:
    """Train (or reuse) a checkpoint in ``out_dir`` and return its path."""
    out = Path(out_dir)
    meta_path = out / "pretrain.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("settings") == asdict(settings):
        log(f"pretrain: reusing the checkpoint in {out} (same settings)")
        return out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the caller's is restored
    try:
        return _train(out, settings, log)
    finally:
        torch.set_num_threads(threads)


def _train(out: Path, settings: PretrainSettings, log) -> Path:
    clips = load_corpus(settings)
    model = build_model(settings.size, seed=settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    streams = RandomStreams(settings.seed)
    order = np.random.default_rng(settings.seed).integers(0, len(clips), size=settings.steps)
    losses, skipped = [], 0
    for step, clip in enumerate(order):
        # Linear warm-up of the rate; the Gumbel temperature decays geometrically, as in wav2vec 2.0.
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / max(1, settings.warmup_steps))
        model.set_gumbel_temperature(_temperature(settings, step))
        result = ssl_step(model, optimizer, clips[clip], streams)
        losses.append(result.loss)
        skipped += result.skipped
        if log and (step + 1) % max(1, settings.steps // 8) == 0:
            log(f"pretrain: step {step + 1}/{settings.steps} loss {np.nanmean(losses[-50:]):.3f}"
                + (f" ({skipped} non-finite steps skipped; lower --lr)" if skipped else ""))
    save_checkpoint(out, model, optimizer, {
        "settings": asdict(settings),
        "gumbel_temperature": _temperature(settings, settings.steps - 1),
        "final_loss": float(np.nanmean(losses[-50:])),
        "skipped_steps": skipped,
    })
    return out


def _temperature(settings: PretrainSettings, step: int) -> float:
    frac = step / max(1, settings.steps - 1)
    return settings.max_temperature * (settings.min_temperature / settings.max_temperature) ** frac


def save_checkpoint(out: Path, model, optimizer, meta: dict) -> None:
    """Write model, optimizer state and metadata; pretrain.json last, so it marks completeness."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrain.json").unlink(missing_ok=True)
    model.save_pretrained(out)
    torch.save(optimizer.state_dict(), out / "optimizer.pt")
    (out / "pretrain.json").write_text(json.dumps(meta, indent=2))


def load_checkpoint(path: str | Path):
    """(model, optimizer state or None, metadata) from a checkpoint directory or hub id.

    A directory made by ``pretrain`` brings its AdamW state and Gumbel temperature; any other
    wav2vec 2.0 pretraining checkpoint loads with a fresh optimizer.
    """
    model = load_model(str(path))
    path = Path(path)
    meta = json.loads((path / "pretrain.json").read_text()) if (path / "pretrain.json").exists() else {}
    if "gumbel_temperature" in meta:
        model.set_gumbel_temperature(meta["gumbel_temperature"])
    state = None
    if (path / "optimizer.pt").exists():
        state = torch.load(path / "optimizer.pt", weights_only=True)
    return model, state, meta
