"""Static analysis time against image size (should be flat) and depth.

    python bench/verify.py
Targets: a 15-layer gated PixelCNN at 3x256x256 and a 30-layer WaveNet at 16,000 samples, each
under 0.5 s after import; the multiscale and PixelRNN zoo specs flat at large sizes."""
from __future__ import annotations

import time
from pathlib import Path

import arspec

SPECS = Path(__file__).resolve().parent.parent / "specs"


def timed(path: Path, overrides: list[str]) -> tuple[float, float, arspec.Report]:
    start = time.perf_counter()
    spec = arspec.load_spec(path, overrides=overrides)
    loaded = time.perf_counter()
    report = arspec.analyze(spec)
    return loaded - start, time.perf_counter() - loaded, report


def main() -> None:
    print("gated PixelCNN (RGB, 1 + 14 gated layers): analysis time against image size")
    print(f"{'event':>14} {'load s':>8} {'analyze s':>10} {'domain':>8} {'verdict':>8}")
    for side in (32, 64, 128, 256):
        load, analyze, report = timed(SPECS / "pixelcnn_rgb.yaml", [f"event.shape=[3,{side},{side}]", "graph.stack.repeat.times=14"])
        print(f"{f'3x{side}x{side}':>14} {load:8.3f} {analyze:10.3f} {report.domain:>8} {'ok' if report.ok else 'FAIL':>8}")
    print("\nWaveNet at 16,000 samples: analysis time against depth")
    print(f"{'layers':>14} {'load s':>8} {'analyze s':>10} {'receptive':>10}")
    for times in (1, 2, 3, 6):
        load, analyze, report = timed(SPECS / "wavenet.yaml", [f"graph.stack.repeat.dilation.times={times}"])
        print(f"{10 * times:>14} {load:8.3f} {analyze:10.3f} {report.receptive_field['elements_seen_interior']:>10}")
    print("\nmultiscale PixelCNN (two doublings, strided ops, periodic offsets): analysis time against image size")
    print(f"{'event':>14} {'load s':>8} {'analyze s':>10} {'domain':>8} {'verdict':>8}")
    for side in (28, 112, 448, 1792):
        load, analyze, report = timed(SPECS / "multiscale_pixelcnn.yaml", [f"event.shape=[1,{side},{side}]", f"ordering.base={side // 4}"])
        print(f"{f'1x{side}x{side}':>14} {load:8.3f} {analyze:10.3f} {report.domain:>8} {'ok' if report.ok else 'FAIL':>8}")
    print("\nPixelRNN (recurrences: a fixpoint over offsets): analysis time against image size")
    print(f"{'event':>22} {'load s':>8} {'analyze s':>10} {'domain':>8} {'verdict':>8}")
    for name in ("row_lstm", "diagonal_bilstm"):
        for side in (28, 64, 128):
            load, analyze, report = timed(SPECS / f"{name}.yaml", [f"event.shape=[1,{side},{side}]"])
            print(f"{f'{name} {side}x{side}':>22} {load:8.3f} {analyze:10.3f} {report.domain:>8} {'ok' if report.ok else 'FAIL':>8}")
    print("\nexact (concrete) analysis of the 28x28 models, for comparison")
    for name in ("made", "nade", "pixelcnn", "gated_pixelcnn"):
        load, analyze, report = timed(SPECS / f"{name}.yaml", [])
        print(f"{name:>14} {load:8.3f} {analyze:10.3f} {report.domain:>10}")


if __name__ == "__main__":
    main()
