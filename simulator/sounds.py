"""Synthetic natural-like sounds (speech, music, noise textures, sweeps) made with numpy and scipy.

Every sound is deterministic given its random generator, float32, RMS-normalised to 0.1 with
10 ms cosine fades at both ends, and never clips. `make_sound_set` draws a balanced set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from replay.checks import check_choice

CATEGORIES = ("speech", "music", "noise", "sweep")
TARGET_RMS = 0.1
FADE_S = 0.01
PEAK_LIMIT = 0.99

# Vowel formants F1-F3 in Hz, adult male averages of Peterson & Barney (1952).
_VOWELS = np.array([
    [270, 2290, 3010],  # i  (beet)
    [390, 1990, 2550],  # I  (bit)
    [530, 1840, 2480],  # E  (bet)
    [660, 1720, 2410],  # ae (bat)
    [730, 1090, 2440],  # a  (father)
    [570, 840, 2410],   # o  (bought)
    [440, 1020, 2240],  # U  (book)
    [300, 870, 2240],   # u  (boot)
    [640, 1190, 2390],  # ^  (but)
    [490, 1350, 1690],  # er (bird)
], dtype=float)
_FORMANT_BANDWIDTHS = np.array([60.0, 90.0, 120.0])
_FORMANT_GAINS = np.array([1.0, 0.6, 0.3])
_SCALES = (
    np.array([0, 2, 4, 5, 7, 9, 11]),  # major
    np.array([0, 2, 3, 5, 7, 8, 10]),  # natural minor
    np.array([0, 2, 4, 7, 9]),         # major pentatonic
)


def _smooth_random(n: int, sample_rate: int, knot_s: float, rng) -> np.ndarray:
    """Random values at knots every ``knot_s`` seconds, linearly interpolated; shape (n,)."""
    n_knots = int(n / (knot_s * sample_rate)) + 2
    knots = rng.uniform(-1.0, 1.0, size=n_knots)
    return np.interp(np.arange(n) / (knot_s * sample_rate), np.arange(n_knots), knots)


def _cosine_fade(x: np.ndarray, n_fade: int) -> np.ndarray:
    """Apply raised-cosine fades of ``n_fade`` samples at both ends of x (in place)."""
    n_fade = min(n_fade, x.shape[-1] // 2)
    if n_fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_fade) / n_fade)
        x[..., :n_fade] *= ramp
        x[..., x.shape[-1] - n_fade:] *= ramp[::-1]
    return x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _finish(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Fade, normalise to TARGET_RMS and soft-limit peaks above PEAK_LIMIT; float32 (n,)."""
    x = _cosine_fade(np.asarray(x, dtype=float), round(FADE_S * sample_rate))
    x *= TARGET_RMS / max(_rms(x), 1e-12)
    # A crest factor above ~10 would clip at RMS 0.1: compress the rare peaks smoothly
    # (tanh keeps small values linear), renormalise, and repeat until the peak fits.
    for _ in range(8):
        if np.max(np.abs(x)) <= PEAK_LIMIT:
            break
        x = 0.5 * np.tanh(x / 0.5)
        x *= TARGET_RMS / max(_rms(x), 1e-12)
    return np.clip(x, -PEAK_LIMIT, PEAK_LIMIT).astype(np.float32)


def _speech(n: int, sample_rate: int, rng) -> np.ndarray:
    """Glottal pulses through three formant resonators that move from vowel to vowel."""
    duration = n / sample_rate
    t = np.arange(n) / sample_rate
    # Syllables of 100-300 ms (a ~5 Hz syllabic rate); about one in eight is a pause.
    lengths = rng.uniform(0.1, 0.3, size=int(duration / 0.1) + 2)
    onsets = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    voiced = rng.random(lengths.size) > 0.12
    gains = rng.uniform(0.5, 1.0, size=lengths.size) * voiced
    syllable = np.searchsorted(onsets, t, side="right") - 1
    phase = (t - onsets[syllable]) / lengths[syllable]
    envelope = gains[syllable] * np.sin(np.pi * phase) ** 0.6

    # f0: speaker base, phrase declination, slow intonation and fast jitter.
    f0_base = rng.uniform(100.0, 250.0)
    phrase_s = rng.uniform(1.0, 2.5)
    contour = (1.0 - 0.15 * (t % phrase_s) / phrase_s
               + 0.1 * _smooth_random(n, sample_rate, 0.25, rng)
               + 0.01 * _smooth_random(n, sample_rate, 0.005, rng))
    cycles = np.cumsum(f0_base * contour) / sample_rate
    pulses = np.flatnonzero(np.diff(np.floor(cycles)) > 0) + 1
    pulses = pulses[envelope[pulses] > 1e-3]

    # Formant targets at syllable centres, linear transitions in between; higher voices have
    # shorter vocal tracts, hence higher formants.
    speaker = 1.0 + 0.2 * (f0_base - 100.0) / 150.0
    targets = _VOWELS[rng.integers(len(_VOWELS), size=lengths.size)] * speaker
    centres = onsets + lengths / 2
    formants = np.stack([np.interp(t[pulses], centres, targets[:, k]) for k in range(3)], axis=1)
    formants = np.minimum(formants, 0.45 * sample_rate)

    # Each glottal pulse excites the resonators: sum of damped sinusoids (FOF synthesis),
    # overlap-added with bincount so there is no loop over pulses.
    n_resp = int(0.025 * sample_rate)
    tau = np.arange(n_resp) / sample_rate
    response = np.zeros((pulses.size, n_resp))
    for k in range(3):
        decay = _FORMANT_GAINS[k] * np.exp(-np.pi * _FORMANT_BANDWIDTHS[k] * tau)
        response += decay * np.sin(2 * np.pi * formants[:, k:k + 1] * tau)
    response *= (envelope[pulses] * rng.uniform(0.9, 1.1, size=pulses.size))[:, None]
    index = pulses[:, None] + np.arange(n_resp)
    voice = np.bincount(index.ravel(), response.ravel(), minlength=n + n_resp)[:n]
    voice /= max(_rms(voice), 1e-12)

    # Fricatives: band-passed noise bursts (s-like or sh-like) at some syllable onsets.
    nyquist = sample_rate / 2
    noises = []
    for lo, hi in [(2000.0, 4000.0), (4000.0, 7000.0)]:  # sh-like, s-like
        hi = min(hi, 0.9 * nyquist)  # low sample rates squeeze the bands under Nyquist
        sos = signal.butter(4, [min(lo, 0.5 * hi) / nyquist, hi / nyquist], btype="band", output="sos")
        noises.append(signal.sosfilt(sos, rng.standard_normal(n)))
    noises = [x / max(_rms(x), 1e-12) for x in noises]
    fricative = np.zeros(n)
    for i in np.flatnonzero(voiced & (rng.random(lengths.size) < 0.35)):
        start = int(onsets[i] * sample_rate)
        width = int(rng.uniform(0.04, 0.1) * sample_rate)
        stop = min(start + width, n)
        if stop > start:
            burst = noises[rng.integers(2)][start:stop] * np.hanning(width)[: stop - start]
            fricative[start:stop] += rng.uniform(0.5, 1.5) * burst
    return voice + 0.5 * fricative


def _note(freq: float, n_note: int, n_release: int, timbre: dict, sample_rate: int, rng) -> np.ndarray:
    """One harmonic note with an ADSR envelope; shape (n_note + n_release,)."""
    n_total = n_note + n_release
    t = np.arange(n_total) / sample_rate
    harmonics = np.arange(1, timbre["n_harmonics"] + 1)
    harmonics = harmonics[harmonics * freq < 0.45 * sample_rate]
    amps = harmonics ** -timbre["tilt"] * np.where(harmonics % 2 == 0, timbre["even"], 1.0)
    decays = timbre["decay"] * np.sqrt(harmonics)  # upper partials die first, as in strings
    phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
    partials = np.sin(2 * np.pi * freq * harmonics[:, None] * t + phases[:, None])
    tone = (amps[:, None] * np.exp(-decays[:, None] * t) * partials).sum(axis=0)
    # ADSR: linear attack, exponential decay to the sustain level, linear release after n_note.
    n_attack = max(1, min(int(timbre["attack"] * sample_rate), n_note))
    env = np.full(n_total, 1.0)
    env[:n_attack] = np.linspace(0.0, 1.0, n_attack)
    after = t[n_attack:] - t[n_attack - 1]
    sustain = timbre["sustain"]
    env[n_attack:] = sustain + (1 - sustain) * np.exp(-after / timbre["decay_s"])
    env[n_note:] *= np.linspace(1.0, 0.0, n_release)
    return tone * env


def _music(n: int, sample_rate: int, rng) -> np.ndarray:
    """A melody of harmonic notes from a scale, with a chord pad under it in half the sounds."""
    timbre = {
        "n_harmonics": int(rng.integers(3, 13)),
        "tilt": rng.uniform(0.6, 2.0),
        "even": rng.uniform(0.1, 1.0),
        "decay": rng.uniform(0.3, 5.0),
        "attack": rng.uniform(0.005, 0.06),
        "decay_s": rng.uniform(0.05, 0.3),
        "sustain": rng.uniform(0.3, 0.9),
    }
    release_s = rng.uniform(0.05, 0.3)
    scale = _SCALES[rng.integers(len(_SCALES))]
    root = int(rng.integers(52, 70))  # MIDI note of the tonic
    beat_s = rng.uniform(0.25, 0.6)
    out = np.zeros(n + int(2 * sample_rate))

    def add(midi: float, onset_s: float, length_s: float, gain: float) -> None:
        start = int(onset_s * sample_rate)
        n_note, n_release = int(length_s * sample_rate), int(release_s * sample_rate)
        if start < n and n_note > 0:
            freq = 440.0 * 2 ** ((midi - 69) / 12)
            note = _note(freq, n_note, max(n_release, 1), timbre, sample_rate, rng)
            stop = min(start + note.size, out.size)
            out[start:stop] += gain * note[: stop - start]

    degree, onset = int(rng.integers(0, len(scale))), 0.0
    while onset < n / sample_rate:
        beats = rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])
        octave, step = divmod(degree, len(scale))
        legato = rng.uniform(0.6, 1.0)
        add(root + 12 * octave + scale[step], onset, beats * beat_s * legato, 1.0)
        onset += beats * beat_s
        step_size = rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3])  # melodies move mostly by steps
        degree = int(np.clip(degree + step_size, 0, 2 * len(scale) - 1))
    if rng.random() < 0.5:
        bar_s = 4 * beat_s
        for bar in range(int(np.ceil(n / sample_rate / bar_s))):
            chord_root = rng.choice([0, 3, 4, 5]) if len(scale) == 7 else rng.choice([0, 2, 3])
            for third in (0, 2, 4):
                octave, step = divmod(chord_root + third, len(scale))
                add(root - 12 + 12 * octave + scale[step], bar * bar_s, 0.9 * bar_s, 0.35)
    return out[:n]


def _noise(n: int, sample_rate: int, rng) -> np.ndarray:
    """A coloured, band-passed or crackling noise texture under slow amplitude modulation."""
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    kind = rng.integers(3)
    if kind == 0:  # coloured noise: power spectrum 1/f^a
        exponent = rng.uniform(0.0, 2.0)
        gain = np.maximum(freqs, 20.0) ** (-exponent / 2)
        x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * gain, n)
    elif kind == 1:  # one or two bands, Gaussian on a log-frequency axis
        gain = np.zeros_like(freqs)
        for _ in range(rng.integers(1, 3)):
            centre = np.exp(rng.uniform(np.log(150.0), np.log(0.35 * sample_rate)))
            width = rng.uniform(0.3, 1.5)  # octaves
            gain += np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / centre) / width) ** 2)
        gain += 3e-3  # a -50 dB floor: real textures are never perfectly band-limited
        x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * gain, n)
    else:  # rain / crackle: random clicks through a damped resonator, over a faint hiss
        rate = rng.uniform(150.0, 3000.0)
        n_clicks = rng.poisson(rate * n / sample_rate)
        where = rng.integers(0, n, size=n_clicks)
        sizes = rng.lognormal(0.0, 0.5, size=n_clicks) * rng.choice([-1.0, 1.0], size=n_clicks)
        clicks = np.bincount(where, sizes, minlength=n)
        centre = rng.uniform(800.0, min(6000.0, 0.4 * sample_rate))
        radius = np.exp(-np.pi * rng.uniform(300.0, 1500.0) / sample_rate)  # pole radius from bandwidth
        resonator = [1.0, -2 * radius * np.cos(2 * np.pi * centre / sample_rate), radius**2]
        x = signal.lfilter([1.0], resonator, clicks)
        x = x / max(_rms(x), 1e-12) + 0.2 * rng.standard_normal(n)
    x /= max(_rms(x), 1e-12)
    # Slow amplitude modulation: a sinusoid below 2 Hz plus a random drift.
    t = np.arange(n) / sample_rate
    depth = rng.uniform(0.2, 0.8)
    drift = np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * t + rng.uniform(0, 2 * np.pi))
    drift = 0.5 * drift + 0.5 * _smooth_random(n, sample_rate, rng.uniform(0.3, 1.5), rng)
    return x * np.exp(depth * drift)


def _sweep(n: int, sample_rate: int, rng) -> np.ndarray:
    """Segments of linear/log chirps (up or down) and FM tones, some amplitude-modulated."""
    out = np.zeros(n)
    low, high = 100.0, 0.4 * sample_rate
    start = 0
    while start < n:
        length = min(int(rng.uniform(0.5, 3.0) * sample_rate), n - start)
        t = np.arange(length) / sample_rate
        span = max(t[-1], 1 / sample_rate)
        f_a, f_b = np.exp(rng.uniform(np.log(low), np.log(high), size=2))
        kind = rng.integers(3)
        if kind == 0:  # linear chirp from f_a to f_b
            inst = f_a + (f_b - f_a) * t / span
        elif kind == 1:  # logarithmic chirp
            inst = f_a * (f_b / f_a) ** (t / span)
        else:  # FM tone: sinusoidal frequency modulation at 1-20 Hz
            depth = rng.uniform(0.02, 0.3) * f_a
            inst = f_a + depth * np.sin(2 * np.pi * rng.uniform(1.0, 20.0) * t)
        tone = np.sin(2 * np.pi * np.cumsum(inst) / sample_rate + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.5:  # AM at 2-30 Hz
            depth = rng.uniform(0.5, 1.0)
            tone *= 1 + depth * np.sin(2 * np.pi * rng.uniform(2.0, 30.0) * t)
        out[start:start + length] = _cosine_fade(tone, round(FADE_S * sample_rate))
        start += length + int(rng.uniform(0.0, 0.3) * sample_rate)
    return out


_GENERATORS = {"speech": _speech, "music": _music, "noise": _noise, "sweep": _sweep}


def make_sound(category: str, duration_s: float, rng: np.random.Generator,
               sample_rate: int = 16000) -> np.ndarray:
    """One synthetic sound of a category.

    Parameters
    ----------
    category : str
        One of CATEGORIES.
    duration_s : float
        Length in seconds (> 0).
    rng : np.random.Generator
        The only source of randomness: the same generator state gives the same sound.
    sample_rate : int
        Samples per second.

    Returns
    -------
    audio : np.ndarray, shape (round(duration_s * sample_rate),), float32
        RMS 0.1, peaks below 1, 10 ms cosine fades at both ends.
    """
    check_choice("category", category, CATEGORIES)
    if not sample_rate > 0:
        raise ValueError(f"Invalid value for the 'sample_rate' parameter. It must be positive, "
                         f"but got {sample_rate!r} instead.")
    n = int(round(duration_s * sample_rate))
    if n < 2:
        raise ValueError(f"Invalid value for the 'duration_s' parameter. It must give at least "
                         f"2 samples, but got {duration_s!r} instead.")
    return _finish(_GENERATORS[category](n, int(sample_rate), rng), sample_rate)


@dataclass(frozen=True)
class SoundSet:
    """A balanced set of synthetic sounds.

    Attributes
    ----------
    audio : np.ndarray, shape (n_sounds, n_samples), float32
    names : list of str, e.g. "speech_003" (category and row index)
    categories : list of str
    sample_rate : int

    >>> sounds = make_sound_set(4, 0.5, seed=0)
    >>> sounds.audio.shape, sorted(sounds.categories)
    ((4, 8000), ['music', 'noise', 'speech', 'sweep'])
    >>> round(float(np.sqrt(np.mean(sounds.audio[0] ** 2))), 3)
    0.1
    """

    audio: np.ndarray
    names: list
    categories: list
    sample_rate: int


def make_sound_set(n_sounds: int, duration_s: float, seed: int, sample_rate: int = 16000) -> SoundSet:
    """Draw ``n_sounds`` sounds cycling through CATEGORIES, in an order shuffled by ``seed``.

    Each sound draws from its own generator spawned from ``seed`` (``SeedSequence.spawn``).
    """
    if not isinstance(n_sounds, (int, np.integer)) or n_sounds < 1:
        raise ValueError(f"Invalid value for the 'n_sounds' parameter. It must be a positive "
                         f"integer, but got {n_sounds!r} instead.")
    order_seed, *sound_seeds = np.random.SeedSequence(seed).spawn(n_sounds + 1)
    cycle = [CATEGORIES[i % len(CATEGORIES)] for i in range(n_sounds)]
    categories = [cycle[i] for i in np.random.default_rng(order_seed).permutation(n_sounds)]
    n_samples = int(round(duration_s * sample_rate))
    audio = np.empty((n_sounds, n_samples), dtype=np.float32)
    for i, (category, sound_seed) in enumerate(zip(categories, sound_seeds)):
        audio[i] = make_sound(category, duration_s, np.random.default_rng(sound_seed), sample_rate)
    width = max(3, len(str(n_sounds - 1)))
    names = [f"{category}_{i:0{width}d}" for i, category in enumerate(categories)]
    return SoundSet(audio=audio, names=names, categories=categories, sample_rate=sample_rate)
