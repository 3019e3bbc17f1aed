"""Audio: mu-law companding, WAV reading/writing (16-bit PCM, stdlib `wave`) and a dataset of
random crops over a folder of WAV files."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from arspec.data.splits import DataError, Splits


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


def wav_folder_splits(folder: Path, spec, seed: int = 0) -> Splits:
    """Crops of the spec's event length from every WAV in `folder`, mu-law quantized, split by file."""
    if len(spec.event.shape) != 1:
        raise DataError("WAV data needs a sequence event, e.g. event: {shape: [16000]}")
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise DataError(f"{folder}: no .wav files")
    length = spec.event.shape[0]
    rate = spec.event.rate or 16000
    classes = getattr(spec.distribution, "classes", 256)
    rng = np.random.default_rng(seed)
    crops_per_file: list[np.ndarray] = []
    for f in files:
        audio, file_rate = read_wav(f)
        audio = resample(audio, file_rate, rate)
        if len(audio) < length:
            raise DataError(f"{f}: {len(audio)} samples at {rate} Hz is shorter than the event length {length}")
        count = max(1, 2 * len(audio) // length)
        starts = rng.integers(0, len(audio) - length + 1, size=count)
        crops = np.stack([audio[s:s + length] for s in starts])
        if getattr(spec.distribution, "quantization", "none") == "mu_law":
            crops = mu_law_encode(crops, classes)
        elif spec.distribution.type not in ("gaussian_mixture", "laplace_mixture"):
            crops = np.round((np.clip(crops, -1, 1) + 1) / 2 * (classes - 1)).astype(np.int64)
        crops_per_file.append(crops)
    if len(files) >= 3:
        order = rng.permutation(len(files))
        n_test = max(1, len(files) // 10)
        test = np.concatenate([crops_per_file[i] for i in order[:n_test]])
        val = np.concatenate([crops_per_file[i] for i in order[n_test:2 * n_test]])
        train = np.concatenate([crops_per_file[i] for i in order[2 * n_test:]])
    else:
        everything = np.concatenate(crops_per_file)
        perm = rng.permutation(len(everything))
        k = max(1, len(everything) // 10)
        test, val, train = everything[perm[:k]], everything[perm[k:2 * k]], everything[perm[2 * k:]]
        if len(train) == 0:
            train = test
    return Splits(torch.as_tensor(train), torch.as_tensor(val), torch.as_tensor(test), f"wav:{folder}")
