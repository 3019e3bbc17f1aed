"""`arspec sample`: samples from a checkpoint as a PNG grid (images) or WAV files (audio), plus the
probability map each image was sampled from."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch


def _context(model, args, n: int) -> dict[str, torch.Tensor]:
    context = {}
    values = dict(item.split("=", 1) for item in args.context)
    if args.label is not None:
        values["label"] = str(args.label)
    for name, cond in model.conditioning.items():
        if cond["type"] == "global":
            if name not in values:
                raise ValueError(f"the model is conditioned on {name!r}: pass --context {name}=VALUE" + (" or --label" if name == "label" else ""))
            v = int(values[name])
            if not 0 <= v < cond["classes"]:
                raise ValueError(f"{name} must be in 0..{cond['classes'] - 1}")
            context[name] = torch.full((n,), v, dtype=torch.long)
        else:
            raise ValueError(f"local conditioning {name!r} needs features; sample it from Python with model.sample(..., {name}=tensor)")
    return context


def _given(model, args) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if not args.given:
        return None, None
    path = Path(args.given)
    shape = model.event_shape
    if path.suffix == ".npy":
        x = torch.as_tensor(np.load(path, allow_pickle=False))
    elif path.suffix == ".wav":
        from arspec.data.audio import mu_law_encode, read_wav
        audio, _ = read_wav(path)
        audio = np.pad(audio[: shape[0]], (0, max(0, shape[0] - len(audio))))
        x = torch.as_tensor(mu_law_encode(audio, model.distribution.classes))
    else:
        from PIL import Image
        img = np.asarray(Image.open(path).convert("L" if shape[0] == 1 else "RGB").resize(shape[:0:-1]))
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        levels = model.distribution.classes
        x = torch.as_tensor(np.round(img / 255 * (levels - 1)).astype(np.int64))
    x = x.reshape(shape)
    if args.known in ("top-half", "first-half"):
        known = torch.zeros(shape, dtype=torch.bool)
        if len(shape) == 1:
            known[: shape[0] // 2] = True
        else:
            known[..., : shape[-2] // 2, :] = True
    else:
        known = torch.as_tensor(np.load(args.known, allow_pickle=False)).bool().reshape(shape)
    return x, known


def run(args) -> int:
    from arspec.checkpoint import load_model
    from arspec.pictures import heat, save_grid, to_uint8_images
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_model(args.checkpoint, device=device)
        context = _context(model, args, args.n)
        given, known = _given(model, args)
    except (FileNotFoundError, ValueError) as err:
        print(f"arspec sample: {err}", file=sys.stderr)
        return 2
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    x = model.sample(args.n, generator=gen, cache=not args.no_cache, given=given, known=known, **context)
    seconds = time.perf_counter() - start
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    d = model.distribution
    spec = model.spec
    if len(model.event_shape) == 1:
        from arspec.data.audio import mu_law_decode, write_wav
        rate = spec.event.rate or 16000
        stem = out.with_suffix("")
        for i, item in enumerate(x.cpu()):
            audio = mu_law_decode(item.numpy(), d.classes) if getattr(spec.distribution, "quantization", "none") == "mu_law" else item.numpy() / max(1, (d.classes or 2) - 1) * 2 - 1
            write_wav(Path(f"{stem}_{i}.wav") if args.n > 1 else out.with_suffix(".wav"), np.asarray(audio), rate)
        print(f"wrote {args.n} WAV file(s) at {rate} Hz next to {out} in {seconds:.1f} s")
        return 0
    images = x.cpu().numpy().reshape(args.n, *model.internal_shape)
    save_grid(out, to_uint8_images(images, d.classes if d.discrete else None))
    with torch.no_grad():
        model.eval()
        nll = -model.log_prob_elements(x, **{k: v.to(model.device) for k, v in context.items()}).cpu().numpy()
    stem = out.with_suffix("")
    save_grid(Path(f"{stem}_nll.png"), heat(nll.reshape(args.n, *model.internal_shape).sum(axis=1)))
    if not d.discrete:
        print(f"wrote {out} ({args.n} samples in {seconds:.1f} s) and {stem}_nll.png (per-element NLL)")
        return 0
    # the probability each element was drawn with, given what came before it (any discrete likelihood)
    chosen = np.exp(-nll)
    save_grid(Path(f"{stem}_probs.png"), heat(chosen.reshape(args.n, *model.internal_shape).mean(axis=1)))
    print(f"wrote {out} ({args.n} samples in {seconds:.1f} s), {stem}_nll.png (per-element NLL) and "
          f"{stem}_probs.png (probability each element was drawn with)")
    return 0
