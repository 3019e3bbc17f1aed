"""PixelVAE against a PixelCNN of the same masked layers, trained side by side in one run on the
standard binarized MNIST (Gulrajani et al. 2017's point: a latent z for the global structure lets a
decoder of few masked layers beat the same layers alone). By default both decoders have one gated
layer of 3x3 kernels, the smallest depth, where the latent has the most to add; `--gated-layers 0
--first-kernel 7` compares the spec's own three layers.

The baseline is the PixelVAE's own decoder with z removed (the same gated layers, kernels and
widths), so the comparison isolates the latent. Both train with the same optimiser, batch size and
number of steps; the PixelCNN's test NLL is exact, the PixelVAE's is reported as the negative ELBO
(an upper bound on its NLL) and as the importance-weighted NLL with K samples on --iw-items test
digits spread evenly over the test set (the standard file is sorted by digit, so its first digits
are nearly all zeros; the PixelCNN on the same digits beside it), with the KL term: a latent the
decoder ignores would make the two models the same, and is reported, not hidden.

    python bench/pixelvae.py [--steps 2000] [--iw 100] [--iw-items 1000] [--gated-layers 1] [--first-kernel 3] [--quick]

Paper figures (far longer GPU training, deeper nets): PixelVAE <= 80.64, Gated PixelVAE <= 80.08 nats."""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import arspec  # noqa: E402

arspec.tune_allocator()        # freed memory kept for reuse; every side of a comparison runs in such a process
from arspec.data import load_data  # noqa: E402
from arspec.train import TrainConfig, evaluate_nll, train  # noqa: E402
from arspec.train.latent import evaluate_latent  # noqa: E402

SPEC = ROOT / "specs" / "pixelvae.yaml"


def with_gated_layers(doc: dict[str, Any], layers: int) -> dict[str, Any]:
    """The spec with `layers` gated layers in the decoder: the first layer, then the repeated block
    `layers - 1` times; with one layer the block use is removed and its readers read the block's
    inputs instead (`stack.h` becomes `h0`)."""
    doc = copy.deepcopy(doc)
    decoder = next(p for p in doc["parts"].values() if p.get("role") == "decoder")
    graph = decoder["graph"]
    found = next(((k, v) for k, v in graph.items() if isinstance(v, dict) and "block" in v), None)
    if found is None:
        raise SystemExit("--gated-layers needs a decoder whose later layers are one repeated block use")
    name, use = found
    if layers > 1:
        use["repeat"] = {"times": layers - 1}
        return doc
    block = decoder["blocks"][use["block"]]
    through = {f"{name}.{port}": use["inputs"][block["inputs"].index(port)] for port in block["outputs"]}
    del graph[name]
    for node in graph.values():
        if isinstance(node, dict) and node.get("inputs"):
            node["inputs"] = [through.get(i, i) for i in node["inputs"]]
    return doc


def baseline_text(doc: dict[str, Any]) -> str:
    """The PixelVAE's decoder as a standalone spec without z: the latent input, every node computed
    from it alone (the z features), and every reference to them removed — the same masked layers."""
    decoder = copy.deepcopy(next(p for p in doc["parts"].values() if p.get("role") == "decoder"))
    decoder.pop("role")
    gone = {k for k, c in decoder.get("conditioning", {}).items() if c.get("from") == "latent"}
    for name in gone:
        del decoder["conditioning"][name]
    for name, node in list(decoder["graph"].items()):             # nodes that read only z (or its features)
        reads = node.get("inputs") or []
        if reads and all(r in gone for r in reads):
            gone.add(name)
            del decoder["graph"][name]

    def strip(graph: dict[str, Any]) -> None:
        for node in graph.values():
            if isinstance(node, dict) and "condition" in node:
                node["condition"] = [c for c in node["condition"] if c not in gone]
    strip(decoder["graph"])
    for block in decoder.get("blocks", {}).values():
        strip(block["graph"])
    decoder.update(name="pixelcnn_same_layers", event=doc["event"], params={**doc.get("params", {}), **decoder.get("params", {})},
                   training=doc.get("training", {}))
    return yaml.safe_dump(decoder, sort_keys=False)


def run_one(spec: Any, data: Any, out: Path, args: argparse.Namespace) -> tuple[Any, float]:
    config = TrainConfig.from_spec(spec, out, steps=args.steps, epochs=10_000, quiet=True, seed=args.seed, validate_every=10_000)
    start = time.time()
    train(spec, data, config)
    from arspec.checkpoint import load_model
    return load_model(out), time.time() - start


def evenly_spaced(total: int, count: int) -> torch.Tensor:
    """`count` indices spread evenly over range(total): every digit class of a sorted test file."""
    return torch.linspace(0, total - 1, min(count, total)).round().long()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--iw", type=int, default=100)
    parser.add_argument("--iw-items", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="600 steps on the 5,000-digit subset, K=10 on 300 digits (the run in bench/README: 14 min on one core shared with other jobs)")
    parser.add_argument("--data", default="binarized-mnist")
    parser.add_argument("--gated-layers", type=int, default=1,
                        help="gated layers in both decoders (1: only the first layer; 0: the spec's three)")
    parser.add_argument("--first-kernel", type=int, default=3,
                        help="kernel of the first masked layer in both decoders (the spec's is 7)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of the PixelVAE spec (e.g. objective.free_nats=1)")
    args = parser.parse_args()
    data_name = args.data
    if args.quick:
        args.steps, args.iw, args.iw_items, data_name = 600, 10, 300, "binarized-mnist-5k"
    warmup = max(1, args.steps // 4)
    text = SPEC.read_text()
    doc = yaml.safe_load(text)
    args.overrides = [f"params.first_kernel={args.first_kernel}", *args.overrides]
    if args.gated_layers:                               # a rewritten spec (its errors point into the rewrite)
        doc = with_gated_layers(doc, args.gated_layers)
        text = yaml.safe_dump(doc, sort_keys=False)
    vae_spec = arspec.parse_spec(text, str(SPEC),
                                 overrides=[f"objective.kl_warmup={warmup}", f"training.data={data_name}", *args.overrides])
    decoder_name = vae_spec.ir.roles["decoder"]
    same = [o.removeprefix(f"parts.{decoder_name}.") for o in args.overrides if o.startswith(f"parts.{decoder_name}.")
            and not o.startswith(f"parts.{decoder_name}.conditioning")]
    same += [o for o in args.overrides if o.startswith("params.")]
    base_spec = arspec.parse_spec(baseline_text(doc), "pixelcnn_same_layers.yaml", overrides=same)   # the same overrides
    data = load_data(base_spec, data_name)
    x_test = data.test
    layers = sum(1 for n in base_spec.ir.op_nodes() if n.op.name in ("vertical_conv2d", "horizontal_conv2d"))
    print(f"# PixelVAE vs the same {layers // 2} gated layer(s) without z (first kernel {args.first_kernel}), {args.steps} steps of batch "
          f"{vae_spec.training.batch_size} each, on {data.name} ({len(data.train):,} train / {len(x_test):,} test), KL warm-up {warmup} steps")
    with tempfile.TemporaryDirectory() as tmp:
        vae, vae_s = run_one(vae_spec, data, Path(tmp) / "vae", args)
        base, base_s = run_one(base_spec, data, Path(tmp) / "base", args)
    base_nll = evaluate_nll(base, x_test, {})
    figures = evaluate_latent(vae, x_test, {}, iw=1)
    sub = x_test[evenly_spaced(len(x_test), args.iw_items)]
    base_sub = evaluate_nll(base, sub, {})
    iw_sub = evaluate_latent(vae, sub, {}, iw=args.iw)
    params_vae = sum(p.numel() for p in vae.parameters())
    params_dec = sum(p.numel() for p in vae.decoder.parameters())
    params_base = sum(p.numel() for p in base.parameters())
    print(f"{'model':<34}{'params':>10}{'train s':>9}{'test NLL (nats)':>18}{f'{len(sub)} spread test':>18}")
    print(f"{'PixelCNN, same layers (exact)':<34}{params_base:>10,}{base_s:>9.0f}{base_nll:>18.2f}{base_sub:>18.2f}")
    print(f"{'PixelVAE (negative ELBO, bound)':<34}{params_vae:>10,}{vae_s:>9.0f}{figures.bound:>18.2f}{iw_sub.bound:>18.2f}")
    print(f"{f'PixelVAE (importance-weighted, K={args.iw})':<34}{'':>10}{'':>9}{'':>18}{iw_sub.iw_nll:>18.2f}")
    print(f"PixelVAE terms on the test set: reconstruction {figures.reconstruction:.2f} + KL {figures.kl:.2f} nats "
          f"(decoder {params_dec:,} parameters, encoder {params_vae - params_dec:,})")
    if figures.latent_unused:
        print(f"FAILURE: the latent is unused (KL {figures.kl:.3f} nats): the decoder ignores z")
    gain = base_sub - iw_sub.iw_nll
    print(f"PixelVAE - PixelCNN on {len(sub)} test digits spread over the test set: {-gain:+.2f} nats "
          f"({'PixelVAE better' if gain > 0 else 'PixelVAE NOT better'}); bound on the full test set {figures.bound - base_nll:+.2f} nats")
    print("paper: PixelVAE <= 80.64, Gated PixelVAE <= 80.08 nats (far longer training, deeper nets)")


if __name__ == "__main__":
    main()
