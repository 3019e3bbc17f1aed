"""Host overhead, counted: the ATen operator calls one training step dispatches (forward, backward,
Adam), and one log-prob call, arspec against hand-written peers of the same architecture (a
`TorchDispatchMode` counts every call below autograd). On an accelerator each call is a kernel
launch and host time; fewer calls than the peer is the target (issue #32).

    python bench/dispatch.py [--list]
MADE against `zuko.nn.MaskedMLP` (pip install -e ".[bench]"), Gated PixelCNN against
`bench/reference/gated_pixelcnn.py`, WaveNet against `bench/reference/wavenet.py`."""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import arspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Counter(TorchDispatchMode):
    """Counts the ATen operator calls made while active, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.calls[func._schema.name.removeprefix("aten::")] += 1
        return func(*args, **(kwargs or {}))


def counted(run: Any) -> collections.Counter:
    run()                                          # warm: lazily built buffers, optimizer state
    with Counter() as counter:
        run()
    return counter.calls


def training_step(params: Any, loss: Any) -> Any:
    opt = torch.optim.Adam(list(params), lr=1e-3, foreach=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()
    return step


def made_pair() -> tuple[Any, Any, Any, Any]:
    import zuko
    spec = arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["graph.out.direct=false"])
    ours = arspec.compile(spec, seed=0)
    order = torch.arange(784)
    peer = zuko.nn.MaskedMLP(order[:, None] > order[None, :], [500, 500])
    x = torch.randint(0, 2, (100, 1, 28, 28))

    def peer_nll() -> torch.Tensor:                 # from the same integer batch as arspec's
        flat = x.flatten(1).float()
        return F.binary_cross_entropy_with_logits(peer(flat), flat, reduction="none").sum(1).mean()

    def ours_nll() -> torch.Tensor:
        return ours.training_loss(x).mean()
    return ours, ours_nll, peer, peer_nll


def gated_pair() -> tuple[Any, Any, Any, Any]:
    from bench.reference.gated_pixelcnn import GatedPixelCNN
    spec = arspec.load_spec(ROOT / "specs" / "gated_pixelcnn.yaml", overrides=["params.channels=32", "params.double=64"])
    ours = arspec.compile(spec, seed=0)
    peer = GatedPixelCNN()
    x = torch.randint(0, 2, (16, 1, 28, 28))
    return ours, (lambda: ours.training_loss(x).mean()), peer, (lambda: peer.nll(x).mean())


def wavenet_pair() -> tuple[Any, Any, Any, Any]:
    from bench.reference.wavenet import WaveNet
    spec = arspec.load_spec(ROOT / "specs" / "wavenet.yaml", overrides=["event.shape=[2000]"])
    ours = arspec.compile(spec, seed=0)
    peer = WaveNet()
    x = torch.randint(0, 256, (2, 2000))
    return ours, (lambda: ours.training_loss(x).mean()), peer, (lambda: peer.nll(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list", action="store_true", help="also list the operators whose counts differ")
    args = parser.parse_args()
    print(f"{'model':16} {'what':22} {'arspec calls':>13} {'peer calls':>11} {'ratio':>6}")
    pairs = {"MADE vs zuko": made_pair, "Gated PixelCNN": gated_pair, "WaveNet": wavenet_pair}
    for name, make in pairs.items():
        try:
            ours, ours_loss, peer, peer_loss = make()
        except ImportError as err:
            print(f"{name:16} skipped ({err}: pip install -e \".[bench]\")")
            continue
        rows = [("training step", training_step(ours.parameters(), ours_loss), training_step(peer.parameters(), peer_loss))]
        rows.append(("log-prob (no grad)", torch.no_grad()(ours_loss), torch.no_grad()(peer_loss)))
        for what, a, b in rows:
            ca, cb = counted(a), counted(b)
            na, nb = sum(ca.values()), sum(cb.values())
            print(f"{name:16} {what:22} {na:13} {nb:11} {na / nb:5.2f}x")
            if args.list:
                for op in sorted(set(ca) | set(cb)):
                    if ca[op] != cb[op]:
                        print(f"    {op:40} {ca[op]:5} {cb[op]:5}")


if __name__ == "__main__":
    main()
