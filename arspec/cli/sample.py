"""`arspec sample`: samples from a checkpoint in the format the output's extension asks for: .npy
(raw values, any event), .png (images, with the per-element NLL and probability maps; videos as
strips of frames), .gif (videos, animated), .wav (audio events) or .txt (token sequences, decoded
with the training data's vocabulary if it had one).
Context comes from --label / --context NAME=CLASS / --context-file; --given/--known complete an item."""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arspec.errors import UsageError

FORMATS = (".png", ".gif", ".npy", ".wav", ".txt")


def context_from_arguments(model: Any, args: Any, n: int) -> dict[str, torch.Tensor]:
    """Context tensors for n items from --label, --context and --context-file (or the first n
    items of a split of the training data, --context-from-data), checked against the model's
    conditioning (names, classes, shapes)."""
    split = getattr(args, "context_from_data", None)
    if split:
        from arspec.data import load_data
        data = load_data(model.spec, model.checkpoint_meta.get("data"))
        context = data.context(model.spec, split)
        if context and len(next(iter(context.values()))) < n:
            raise UsageError(f"--context-from-data {split}: the {split} split has {len(next(iter(context.values())))} items, fewer than -n {n}")
        return {k: v[:n] for k, v in context.items()}
    values: dict[str, Any] = dict(args.context)
    if getattr(args, "label", None) is not None:
        values["label"] = args.label
    if getattr(args, "context_file", None):
        values.update(read_context_file(Path(args.context_file)))
    unknown = sorted(set(values) - set(model.conditioning))
    if unknown:
        raise UsageError(f"the model has no conditioning named {', '.join(unknown)} (it has: {', '.join(model.conditioning) or 'none'})")
    from arspec.ordering import internal_event
    spatial = internal_event(tuple(model.event_shape))[1:]
    return {name: _context_value(name, cond, values.get(name), n, spatial) for name, cond in model.conditioning.items()}


def read_context_file(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a --context-file (.npz), each plain numbers without NaN or infinities."""
    from arspec.data.files import plain_numbers, read_npz
    from arspec.data.splits import DataError
    label = f"--context-file {path}"
    try:
        arrays = read_npz(path, label)
        return {k: (v if v.ndim == 0 and v.dtype.kind in "iu" else plain_numbers(k, v, label)) for k, v in arrays.items()}
    except DataError as err:
        raise UsageError(str(err)) from None


def _context_value(name: str, cond: dict[str, Any], value: Any, n: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """One context input for n items: one value (or row) for all of them, or one per item."""
    if value is None:
        hint = f"--context {name}=CLASS" if cond["type"] == "global" else f"--context-file with an array named {name}"
        raise UsageError(f"the model is conditioned on {name!r}: pass {hint}")
    array = np.asarray(value)
    if cond["type"] == "global":
        if array.dtype.kind not in "iu" or array.ndim > 1:
            raise UsageError(f"context {name!r} is a class: one integer, or one per item")
        if array.size == 0 or array.min() < 0 or array.max() >= cond["classes"]:
            shown = f"{array.min()}..{array.max()}" if array.size else "nothing"
            raise UsageError(f"context {name!r} must lie in 0..{cond['classes'] - 1}, got {shown}")
        if array.ndim == 1 and len(array) not in (1, n):
            raise UsageError(f"context {name!r} has {len(array)} values for {n} samples (give one, or one per sample)")
        return torch.as_tensor(np.broadcast_to(array, (n,)).copy(), dtype=torch.long)
    item = (cond["channels"], *[s // cond["upsample"] for s in spatial])
    if array.shape == item:
        array = array[None]
    if array.shape[1:] != item:
        raise UsageError(f"context {name!r} needs items of shape {list(item)} (channels, then the event's size / upsample "
                         f"{cond['upsample']}), one for all samples or one per sample; got an array of shape {list(array.shape)}")
    if array.shape[0] not in (1, n):
        raise UsageError(f"context {name!r} has {array.shape[0]} rows for {n} samples (give one, or one per sample)")
    return torch.as_tensor(np.broadcast_to(array, (n, *item)).astype(np.float32))


def _given(model: Any, args: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if not args.given:
        return None, None
    path, shape = Path(args.given), tuple(model.event_shape)
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.shape == (1, *shape):
            x = x[0]
        if x.shape != shape:
            raise UsageError(f"--given {path}: expected one item of the event's shape {list(shape)}, got an array of shape {list(x.shape)}")
        given = torch.as_tensor(x)
    elif path.suffix == ".wav":
        if len(shape) != 1:
            raise UsageError(f"--given {path}: a WAV file needs an audio event [T], the model's event is {list(shape)}")
        from arspec.data.audio import mu_law_encode, read_wav
        audio, _ = read_wav(path)
        audio = np.pad(audio[: shape[0]], (0, max(0, shape[0] - len(audio))))
        given = torch.as_tensor(mu_law_encode(audio, model.distribution.classes))
    elif path.suffix == ".png":
        if len(shape) != 3 or shape[0] not in (1, 3) or not model.distribution.discrete:
            raise UsageError(f"--given {path}: a PNG needs an image event [1 or 3, H, W] with discrete levels, the model's event is {list(shape)}")
        from PIL import Image
        img = np.asarray(Image.open(path).convert("L" if shape[0] == 1 else "RGB").resize(shape[:0:-1]))
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        given = torch.as_tensor(np.round(img / 255 * (model.distribution.classes - 1)).astype(np.int64))
    else:
        raise UsageError(f"--given {path}: expected a .npy, .png or .wav file")
    return given, _known(args.known, shape)


def _known(spec: str, shape: tuple[int, ...]) -> torch.Tensor:
    if spec.startswith("first-frames:"):
        if len(shape) != 4:
            raise UsageError(f"--known {spec}: first-frames needs a video event [T, C, H, W], the event is {list(shape)}")
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise UsageError(f"--known {spec}: expected first-frames:K with K a number of frames") from None
        if not 0 <= k <= shape[0]:
            raise UsageError(f"--known {spec}: the video has {shape[0]} frames, K must lie in 0..{shape[0]}")
        known = torch.zeros(shape, dtype=torch.bool)
        known[:k] = True
        return known
    if spec in ("top-half", "first-half"):
        known = torch.zeros(shape, dtype=torch.bool)
        if len(shape) == 1:
            known[: shape[0] // 2] = True
        else:
            known[..., : shape[-2] // 2, :] = True
        return known
    mask = np.load(spec, allow_pickle=False)
    if mask.shape != shape:
        raise UsageError(f"--known {spec}: expected a boolean mask of the event's shape {list(shape)}, got {list(mask.shape)}")
    return torch.as_tensor(mask).bool()


def run(args: Any) -> int:
    from arspec.checkpoint import load_model
    out = Path(args.output)
    if out.suffix not in FORMATS:
        raise UsageError(f"-o {out}: the format follows the extension, one of {', '.join(FORMATS)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.checkpoint, device=device)
    if model.checkpoint_note:
        print(f"note: {model.checkpoint_note}", file=sys.stderr)
    _check_format(model, out)
    _check_count(model, out, args.n)
    context = context_from_arguments(model, args, args.n)
    given, known = _given(model, args)
    if hasattr(model, "elbo") or hasattr(model, "flows"):
        return _sample_latent(model, args, out, context, device)
    if known is not None and not model.completion_is_exact(known):
        print("note: completion is approximate: some known elements come after unknown ones in the order and are clamped",
              file=sys.stderr)
    path = model.sampling_path(known) if hasattr(model, "sampling_path") else ""
    if args.no_cache:
        print("note: sampling naively (--no-cache): one full pass per step", file=sys.stderr)
    elif path.startswith(("naive", "cached, on the slower")):
        print(f"note: sampling {path}", file=sys.stderr)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    x = _sample_in_batches(model, args, gen, given, known, context)
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    model.sheet_title = _caption(model, args)
    written = WRITERS[out.suffix](model, x, out, context)
    if given is not None and known is not None and out.suffix == ".png" and x.dim() == 4:
        written += ", " + _write_completions(model, x, given, known, out)
    print(f"wrote {written}; {args.n} sample(s) in {seconds:.1f} s")
    return 0


def _caption(model: Any, args: Any) -> str:
    """The title of a picture of samples: the spec, the checkpoint, the temperature."""
    checkpoint = getattr(model, "checkpoint_path", None)
    source = f"{checkpoint.parent.name}/{checkpoint.name}" if checkpoint is not None else "initial weights"
    return f"{model.spec.name} — {source} — temperature {args.temperature:g}, seed {args.seed}"


def _write_completions(model: Any, x: torch.Tensor, given: torch.Tensor, known: torch.Tensor, out: Path) -> str:
    """`<stem>_completions.png`: the given item with what was not given dimmed (the known region
    outlined), then each completion."""
    from arspec.pictures import dim_unknown, save_sample_sheet, to_uint8_images
    d = model.distribution
    classes = d.classes if d.discrete else None
    images = to_uint8_images(torch.cat([given[None].to(x.dtype), x]).numpy(), classes)
    mask = known.numpy().reshape(known.shape[-3:]).any(axis=0)
    images[0] = dim_unknown(images[0], mask)
    path = Path(f"{out.with_suffix('')}_completions.png")
    save_sample_sheet(path, images, f"{getattr(model, 'sheet_title', model.spec.name)}: completions",
                      ["given (dimmed: to complete)"] + [f"completion {i + 1}" for i in range(len(x))], cols=min(len(images), 6))
    return f"{path} (the given item, then each completion)"


MAX_PICTURE_SAMPLES = 10_000


def _check_count(model: Any, out: Path, n: int) -> None:
    """Refuse -n before anything is allocated when the samples cannot fit in memory (or in a picture)."""
    from arspec.resources import available_memory, gigabytes
    if out.suffix in (".png", ".gif") and n > MAX_PICTURE_SAMPLES:
        raise UsageError(f"-n {n:,}: a picture of more than {MAX_PICTURE_SAMPLES:,} samples; write them to .npy instead")
    elements = 1
    for s in model.event_shape:
        elements *= int(s)
    need = n * elements * 8 * 2                  # the samples and the values sampling keeps per item, at 8 bytes each
    free = available_memory()
    if free is not None and need > free:
        raise UsageError(f"-n {n:,}: {n:,} samples of {elements:,} elements need about {gigabytes(need)}, more than the "
                         f"{gigabytes(free)} of memory available here; ask for fewer (or several runs with other --seed)")


def _sample_in_batches(model: Any, args: Any, gen: torch.Generator, given: Any, known: Any,
                       context: dict[str, torch.Tensor]) -> torch.Tensor:
    """model.sample for -n items, --batch-size at a time (a progress bar when there are several batches)."""
    from tqdm import tqdm
    n, size = args.n, args.batch_size
    parts = []
    with warnings.catch_warnings(), tqdm(total=n, desc="sampling", unit="sample", disable=n <= size, dynamic_ncols=True) as bar:
        warnings.simplefilter("ignore")            # the completion note is printed before
        for start in range(0, n, size):
            m = min(size, n - start)
            part = {k: v[start:start + m] for k, v in context.items()}
            parts.append(model.sample(m, generator=gen, cache=not args.no_cache, given=given, known=known,
                                      temperature=args.temperature, **part).cpu())
            bar.update(m)
    return torch.cat(parts)


def _sample_latent(model: Any, args: Any, out: Path, context: dict[str, torch.Tensor], device: str) -> int:
    """A model of several parts. A latent-variable model: z from the prior, then the decoder; with a
    PNG also reconstructions of test items (from their posterior means) and interpolations between
    them in z. A student of flows: one parallel pass per flow."""
    if args.given:
        raise UsageError("--given: completion is for autoregressive models; a model of several parts samples its noise or z first")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    x = model.sample(args.n, generator=gen, cache=not args.no_cache, temperature=args.temperature, **context).cpu()
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix != ".png" or not hasattr(model, "elbo"):
        written = WRITERS[out.suffix](model, x, out, context)
        print(f"wrote {written}; {args.n} sample(s) in {seconds:.1f} s")
        return 0
    from arspec.pictures import save_grid, to_uint8_images
    classes = model.distribution.classes if model.distribution.discrete else None
    save_grid(out, to_uint8_images(x.numpy(), classes))
    written = [str(out)]
    items = _test_items(model, 8)
    if items is not None:
        stem = out.with_suffix("")
        recon = model.reconstruct(items, generator=gen).cpu()
        save_grid(Path(f"{stem}_reconstructions.png"), to_uint8_images(torch.cat([items, recon]).numpy(), classes), cols=len(items))
        rows = [model.interpolate(items[2 * i], items[2 * i + 1], 8, generator=gen).cpu() for i in range(len(items) // 2)]
        save_grid(Path(f"{stem}_interpolations.png"), to_uint8_images(torch.cat(rows).numpy(), classes), cols=8)
        written += [f"{stem}_reconstructions.png (test items, then their reconstructions)",
                    f"{stem}_interpolations.png (each row: z from one test item's posterior mean to another's)"]
    print(f"wrote {', '.join(written)}; {args.n} sample(s) in {seconds:.1f} s")
    return 0


def _test_items(model: Any, n: int) -> torch.Tensor | None:
    """The first n test items of the data the model was trained on (None, with a note, when unavailable)."""
    from arspec.data import load_data
    from arspec.data.splits import DataError
    try:
        data = load_data(model.spec, model.checkpoint_meta.get("data"))
    except (DataError, OSError) as err:
        print(f"note: no reconstructions ({err})", file=sys.stderr)
        return None
    return data.test[:n]


def _check_format(model: Any, out: Path) -> None:
    shape, d = tuple(model.event_shape), model.distribution
    image = len(shape) == 3 and shape[0] in (1, 3)
    video = len(shape) == 4 and shape[1] in (1, 3)
    if out.suffix == ".png" and not (image or video):
        raise UsageError(f"-o {out}: a PNG needs an image event [1 or 3, H, W] or a video [T, 1 or 3, H, W]; the event is {list(shape)} (use .npy)")
    if out.suffix == ".gif" and not video:
        raise UsageError(f"-o {out}: a GIF needs a video event [T, 1 or 3, H, W]; the event is {list(shape)} (use .png or .npy)")
    spec = model.spec
    audio = len(shape) == 1 and (spec.event.rate is not None or getattr(spec.distribution, "quantization", "none") == "mu_law")
    if out.suffix == ".wav" and not audio:
        raise UsageError(f"-o {out}: WAV needs an audio event (a 1-D event with a sample `rate:` or mu-law quantization); "
                         f"the event is {list(shape)} (use .npy or .txt)")
    if out.suffix == ".txt" and not d.discrete:
        raise UsageError(f"-o {out}: text needs discrete tokens; this model's elements are real-valued (use .npy)")


def _write_npy(model: Any, x: torch.Tensor, out: Path, context: dict[str, torch.Tensor]) -> str:
    np.save(out, x.numpy())
    return f"{out} (array of shape {list(x.shape)})"


def _write_png(model: Any, x: torch.Tensor, out: Path, context: dict[str, torch.Tensor]) -> str:
    from arspec.pictures import save_heat_grid, save_sample_sheet, to_uint8_images, video_strips
    d = model.distribution
    if x.dim() == 5:
        video_strips(x.numpy(), d.classes if d.discrete else None).save(out)
        return f"{out} (one row of frames per video)"
    with torch.no_grad():
        nll = -model.log_prob_elements(x, **{k: v.to(model.device) for k, v in context.items()}).cpu().numpy()
    per_sample = nll.reshape(len(nll), -1).sum(axis=1)
    save_sample_sheet(out, to_uint8_images(x.numpy(), d.classes if d.discrete else None), getattr(model, "sheet_title", model.spec.name),
                      [f"{v:.1f} nats" for v in per_sample])
    stem = out.with_suffix("")
    save_heat_grid(Path(f"{stem}_nll.png"), nll.sum(axis=1), "negative log-likelihood of each sampled element", "nats (summed over channels)")
    if not d.discrete:
        return f"{out} and {stem}_nll.png (per-element NLL)"
    save_heat_grid(Path(f"{stem}_probs.png"), np.exp(-nll).mean(axis=1), "probability each element was drawn with", "probability (mean over channels)")
    return f"{out}, {stem}_nll.png (per-element NLL) and {stem}_probs.png (probability each element was drawn with)"


def _write_gif(model: Any, x: torch.Tensor, out: Path, context: dict[str, torch.Tensor]) -> str:
    from arspec.pictures import save_video_gif
    d = model.distribution
    save_video_gif(out, x.numpy(), d.classes if d.discrete else None)
    return f"{out} (animated: {x.shape[1]} frames, the {x.shape[0]} video(s) side by side)"


def _write_wav(model: Any, x: torch.Tensor, out: Path, context: dict[str, torch.Tensor]) -> str:
    from arspec.data.audio import mu_law_decode, write_wav
    spec, d = model.spec, model.distribution
    rate = spec.event.rate or 16000
    stem = out.with_suffix("")
    paths = []
    for i, item in enumerate(x.numpy()):
        if getattr(spec.distribution, "quantization", "none") == "mu_law":
            audio = mu_law_decode(item, d.classes)
        elif d.discrete:
            audio = item / max(1, d.classes - 1) * 2 - 1
        else:
            audio = np.clip(item, -1, 1)
        path = out if x.shape[0] == 1 else Path(f"{stem}_{i}.wav")
        write_wav(path, np.asarray(audio), rate)
        paths.append(path)
    return f"{len(paths)} WAV file(s) at {rate} Hz: {paths[0]}" + (" ..." if len(paths) > 1 else "")


def _write_txt(model: Any, x: torch.Tensor, out: Path, context: dict[str, torch.Tensor]) -> str:
    vocab = model.checkpoint_meta.get("vocab")
    rows = x.reshape(x.shape[0], -1).tolist()
    if vocab:
        lines = ["".join(vocab[t] if t < len(vocab) else "\ufffd" for t in row) for row in rows]
    else:
        lines = [" ".join(str(t) for t in row) for row in rows]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"{out} ({'decoded with the data vocabulary' if vocab else 'token ids: the training data had no vocabulary'})"


WRITERS = {".npy": _write_npy, ".png": _write_png, ".gif": _write_gif, ".wav": _write_wav, ".txt": _write_txt}
