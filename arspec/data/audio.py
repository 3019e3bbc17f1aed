"""Audio: mu-law companding, WAV reading/writing (16-bit PCM, stdlib `wave`) and a dataset of
random crops over a folder of WAV files."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from arspec.data.splits import DataError, Splits
from arspec.spec.models import REAL_VALUED


def mu_law_encode(audio: np.ndarray | torch.Tensor, classes: int = 256):
    """Real audio in [-1, 1] -> integer classes 0..classes-1 (ITU-T G.711 companding)."""
    mu = classes - 1
    lib = torch if isinstance(audio, torch.Tensor) else np
    a = lib.clip(audio, -1.0, 1.0)
    y = lib.sign(a) * lib.log1p(mu * lib.abs(a)) / np.log1p(mu)
    q = lib.floor((y + 1) / 2 * mu + 0.5)
    return q.long() if lib is torch else q.astype(np.int64)


def mu_law_decode(q: np.ndarray | torch.Tensor, classes: int = 256):
    """Integer classes -> real audio in [-1, 1] (inverse of mu_law_encode up to quantization)."""
    mu = classes - 1
    lib = torch if isinstance(q, torch.Tensor) else np
    y = 2 * (q.double() if lib is torch else q.astype(np.float64)) / mu - 1
    return lib.sign(y) * ((1 + mu) ** lib.abs(y) - 1) / mu


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float audio in [-1, 1] and its sample rate (multi-channel files are averaged)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as err:
        raise DataError(f"{path}: not a PCM WAV file ({err})") from None
    if width == 2:
        audio = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 1:
        audio = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128) / 128.0
    elif width == 4:
        audio = np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0
    else:
        raise DataError(f"{path}: unsupported sample width {width} bytes")
    return audio.reshape(-1, channels).mean(axis=1), rate


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling to `target` Hz."""
    if rate == target:
        return audio
    from math import gcd

    from scipy.signal import resample_poly
    g = gcd(rate, target)
    return resample_poly(audio, target // g, rate // g)


def mel_filterbank(bands: int, n_fft: int, rate: int) -> np.ndarray:
    """Triangular filters (bands, n_fft // 2 + 1) equally spaced on the mel scale (HTK formula)
    from 0 Hz to the Nyquist frequency, each with unit peak."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(0.0), mel(rate / 2), bands + 2))
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0.0, None)


def log_mel(audio: np.ndarray, rate: int, hop: int, bands: int) -> np.ndarray:
    """Log-mel features (bands, len(audio) // hop): frame k is centred on the middle of samples
    [k hop, (k + 1) hop), with a Hann window of 4 hops (at least 64 samples) and a power spectrum."""
    width = max(64, 4 * hop)
    n_fft = 1 << (width - 1).bit_length()
    frames = len(audio) // hop
    padded = np.pad(audio, (width, width), mode="reflect" if len(audio) > width else "constant")
    centres = np.arange(frames) * hop + hop // 2 + width
    index = centres[:, None] - width // 2 + np.arange(width)[None]
    windowed = padded[index] * np.hanning(width)[None]
    power = np.abs(np.fft.rfft(windowed, n=n_fft, axis=1)) ** 2
    return np.log(mel_filterbank(bands, n_fft, rate) @ power.T + 1e-5)


def wav_folder_splits(folder: Path, spec, seed: int = 0) -> Splits:
    """Crops of the spec's event length from every WAV in `folder`, mu-law quantized (or linear
    levels, or real values), split by file. Each local conditioning input of the spec gets log-mel
    features of the audio: `channels` mel bands, one frame per `upsample` samples (standardized per
    band over the data), aligned with the crop."""
    if len(spec.event.shape) != 1:
        raise DataError("WAV data needs a sequence event, e.g. event: {shape: [16000]}")
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise DataError(f"{folder}: no .wav files")
    length = spec.event.shape[0]
    rate = spec.event.rate or 16000
    classes = getattr(spec.distribution, "classes", 256)
    rng = np.random.default_rng(seed)
    local = {name: c for name, c in spec.conditioning.items() if c.type == "local"}
    hop = int(np.lcm.reduce([c.upsample for c in local.values()])) if local else 1
    crops_per_file: list[np.ndarray] = []
    features_per_file: list[dict[str, np.ndarray]] = []
    for f in files:
        audio, file_rate = read_wav(f)
        audio = resample(audio, file_rate, rate)
        if len(audio) < length:
            raise DataError(f"{f}: {len(audio)} samples at {rate} Hz is shorter than the event length {length}")
        count = max(1, 2 * len(audio) // length)
        starts = rng.integers(0, (len(audio) - length) // hop + 1, size=count) * hop
        crops = np.stack([audio[s:s + length] for s in starts])
        features = {}
        for name, c in local.items():
            mel = log_mel(audio, rate, c.upsample, c.channels)
            features[name] = np.stack([mel[:, s // c.upsample: s // c.upsample + length // c.upsample] for s in starts])
        features_per_file.append(features)
        if getattr(spec.distribution, "quantization", "none") == "mu_law":
            crops = mu_law_encode(crops, classes)
        elif spec.distribution.type not in REAL_VALUED:
            crops = np.round((np.clip(crops, -1, 1) + 1) / 2 * (classes - 1)).astype(np.int64)
        crops_per_file.append(crops)
    feats = {name: np.concatenate([f[name] for f in features_per_file]) for name in local}
    for name, value in feats.items():        # standardize each band over the whole data
        mean, std = value.mean(axis=(0, 2), keepdims=True), value.std(axis=(0, 2), keepdims=True) + 1e-5
        feats[name] = ((value - mean) / std).astype(np.float32)
    everything = np.concatenate(crops_per_file)
    sizes = np.cumsum([0] + [len(c) for c in crops_per_file])
    if len(files) >= 3:
        order = rng.permutation(len(files))
        n_test = max(1, len(files) // 10)
        pick = [np.concatenate([np.arange(sizes[i], sizes[i + 1]) for i in order[a:b]]) for a, b in
                ((0, n_test), (n_test, 2 * n_test), (2 * n_test, len(files)))]
    else:
        perm = rng.permutation(len(everything))
        k = max(1, len(everything) // 10)
        pick = [perm[:k], perm[k:2 * k], perm[2 * k:] if len(perm) > 2 * k else perm[:k]]
    test, val, train = (everything[i] for i in pick)
    contexts = {split: {name: torch.as_tensor(value[i]) for name, value in feats.items()}
                for split, i in zip(("test", "validation", "train"), pick)}
    return Splits(torch.as_tensor(train), torch.as_tensor(val), torch.as_tensor(test), f"wav:{folder}", contexts)
