"""`arspec graph` draws what a researcher needs to see: the receptive field per channel, leaks in
red with the culprit edge, sequences on an absolute axis, every element a random order reads, and
op-graph labels that never overlap, edges routed around them, and long repeated blocks folded."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import arspec
from arspec.graph_figure import LEAK, SEEN, SELF, default_element, field_categories, graph_figure
from arspec.graph_layout import BOX_HEIGHT_INCHES, folded_names, graph_layout

ROOT = Path(__file__).resolve().parent.parent


def _spec_and_report(path: str, overrides=()):
    spec = arspec.load_spec(ROOT / path, overrides=list(overrides))
    return spec, arspec.analyze(spec)


def test_rgb_fields_are_drawn_per_channel_and_blue_reads_red_and_green_at_its_own_pixel():
    spec, report = _spec_and_report("specs/pixelcnn_rgb.yaml", ["event.shape=[3,8,8]"])
    codes = field_categories(report, (2, 4, 4))
    assert codes.shape == (3, 8, 8)
    assert codes[0, 4, 4] == SEEN and codes[1, 4, 4] == SEEN and codes[2, 4, 4] == SELF
    red = field_categories(report, (0, 4, 4))
    assert red[1, 4, 4] != SEEN and red[2, 4, 4] != SEEN          # red reads neither G nor B of its pixel


def test_a_leaking_spec_is_drawn_with_its_leak_and_culprit(tmp_path):
    spec, report = _spec_and_report("specs/broken/gated_no_vertical_shift.yaml")
    element = default_element(report)
    assert element == (0, 0, 0)                                     # the first leaking element
    codes = field_categories(report, element)
    assert (codes == LEAK).any()
    fig = graph_figure(spec, report, element)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("leak enters at 'h0_sum' from 'link0'" in ax.get_title(loc="left") for ax in fig.axes), [ax.get_title(loc="left") for ax in fig.axes]
    assert "h0_sum\nadd" in texts
    out = tmp_path / "leak.png"
    result = subprocess.run([sys.executable, "-m", "arspec", "graph", "specs/broken/gated_no_vertical_shift.yaml", "-o", str(out)],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ}, timeout=300)
    assert result.returncode == 1 and "leak is drawn in red" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sequences_are_drawn_on_absolute_time_steps():
    spec, report = _spec_and_report("specs/wavenet.yaml", ["event.shape=[4096]"])
    fig = graph_figure(spec, report, (4000,))
    strip = fig.axes[0]
    lo, hi = strip.get_xlim()
    field = report.dependency_set(4000)
    assert lo <= min(field) and hi >= 4000 and lo > 500             # absolute positions, not a window from 0
    assert strip.get_xlabel() == "time step (absolute)"


def test_a_random_order_shows_every_element_read():
    text = (ROOT / "specs" / "made.yaml").read_text().replace("ordering: {type: raster}", "ordering: {type: random, seed: 3}")
    spec = arspec.parse_spec(text, overrides=["params.hidden=64", "event.shape=[40]"])
    report = arspec.analyze(spec)
    t = int(np.argmax(report.order.reshape(-1)))                   # the last element generated reads the most
    fig = graph_figure(spec, report, (t,))
    lo, hi = fig.axes[0].get_xlim()
    assert all(lo <= e <= hi for e in report.dependency_set(t))
    codes = field_categories(report, (t,))
    assert int((codes == SEEN).sum()) == len(report.dependency_set(t))


@pytest.mark.parametrize("path", ["specs/gated_pixelcnn.yaml", "specs/wavenet_conditional.yaml", "specs/multiscale_pixelcnn.yaml"])
def test_op_graph_labels_never_overlap(path):
    spec, report = _spec_and_report(path)
    layout = graph_layout(spec.ir)
    assert set(layout.shown) == {n.name for n in spec.ir}
    fig = graph_figure(spec, report, default_element(report))
    fig.canvas.draw()                                   # places the label boxes
    renderer = fig.canvas.get_renderer()
    graph_axes = fig.axes[-1]
    labels = [t for t in graph_axes.texts if t.get_bbox_patch() is not None]       # arrows are texts too
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
    assert len(boxes) == len(layout)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "two op-graph labels overlap"


def test_an_order_agnostic_model_is_drawn_in_raster_order_with_the_past_observed():
    from arspec.cli.graph import in_raster_order
    spec, report = _spec_and_report("specs/deep_nade.yaml", ["event.shape=[1,6,6]", "params.hidden=8"])
    view = in_raster_order(spec, report, (0, 3, 2))
    codes = field_categories(view, (0, 3, 2))
    assert (codes == SEEN).sum() == 3 * 6 + 2 and codes[0, 3, 2] == SELF
    assert not (codes == LEAK).any()


def _wavenet_ir():
    return arspec.load_spec(ROOT / "specs/wavenet.yaml", overrides=["event.shape=[512]"]).ir


def test_a_long_repeated_block_is_folded_beyond_its_first_and_last_repeat():
    ir = _wavenet_ir()
    shown = folded_names(ir)
    assert shown["stack[0].filt"] == "stack[0].filt" and shown["stack[29].res"] == "stack[29].res"
    assert shown["stack[1].filt"] == shown["stack[28].skip"] == "stack[1..28]"
    kept = folded_names(ir, keep={"stack[7].res"})                 # a leak's repeat stays drawn
    assert kept["stack[7].filt"] == "stack[7].filt"
    assert kept["stack[6].res"] == "stack[1..6]" and kept["stack[8].res"] == "stack[8..28]"
    layout = graph_layout(ir)
    folded = layout["stack[1..28]"]
    assert folded.kind == "folded" and len(folded.members) == 28 * 3
    assert sum(len(box.members) for box in layout.boxes.values()) == len(list(ir))
    assert len(graph_layout(ir, fold=False)) == len(list(ir))


def test_every_edge_between_boxes_is_drawn_and_only_those():
    ir = _wavenet_ir()
    layout = graph_layout(ir)
    expected = {(layout.shown[s], layout.shown[n.name]) for n in ir for s in n.all_inputs} - {(b, b) for b in layout.boxes}
    assert set(layout.routes) == expected


@pytest.mark.parametrize("path", ["specs/gated_pixelcnn.yaml", "specs/wavenet.yaml", "specs/video_pixel_network.yaml", "specs/pixelsnail.yaml"])
def test_edges_never_pass_through_a_label_they_do_not_join(path):
    layout = graph_layout(arspec.load_spec(ROOT / path).ir)
    half_h = BOX_HEIGHT_INCHES / 2
    for (source, target), route in layout.routes.items():
        for (x0, y0), (x1, y1) in zip(route, route[1:]):
            for t in np.linspace(0, 1, 41):
                x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                for name, box in layout.boxes.items():
                    if name in (source, target):
                        continue
                    inside = abs(x - box.x) < box.width / 2 and abs(y - box.y) < half_h
                    assert not inside, f"edge {source} -> {target} crosses the label of {name}"


def test_unfold_draws_every_repeat(tmp_path):
    out = tmp_path / "wavenet.png"
    result = subprocess.run([sys.executable, "-m", "arspec", "graph", "specs/wavenet.yaml", "--set", "event.shape=[512]", "--unfold",
                             "-o", str(out)], capture_output=True, text=True, cwd=ROOT, env={**os.environ}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_video_report_names_the_dependencies_of_an_element_in_its_frames():
    spec, report = _spec_and_report("specs/video_pixel_network_small.yaml")
    assert report.dependencies is None                             # the offset domain answers
    t, c, h, w = report.event_shape
    element = (t - 1, 0, h // 2, w // 2)
    codes = field_categories(report, element)
    assert codes.shape == (c, t, h, w)
    assert (codes[:, : t - 1] == SEEN).all()                       # every earlier frame is read whole
    assert codes[0, t - 1, h // 2, w // 2] == SELF
    assert not (codes == LEAK).any()


def test_a_long_video_is_drawn_over_the_frames_around_the_element():
    from arspec.graph_figure import frame_window
    assert frame_window(20, 10) == (6, 12) and frame_window(20, 0) == (0, 2) and frame_window(20, 19) == (15, 20)
    spec, report = _spec_and_report("specs/video_pixel_network_small.yaml", ["event.shape=[12,1,8,8]"])
    fig = graph_figure(spec, report, (9, 0, 4, 4))
    texts = [t.get_text() for t in fig.texts]
    assert any("frames 5-10 of 12" in t for t in texts), texts
    assert fig.get_size_inches()[0] < 20


def test_the_layout_does_not_depend_on_where_objects_lie_in_memory():
    """grandalf splits a graph into parts through a set of edge objects (hashed by address): the
    layout must not follow that order (it did: 4 layouts of PixelSNAIL in 10 calls)."""
    ir = arspec.load_spec(ROOT / "specs/pixelsnail.yaml").ir
    first = graph_layout(ir).routes
    padding = []
    for size in (1, 977, 5003, 12011, 20011, 3, 7919):
        padding.append([object() for _ in range(size)])                # moves where the next objects are allocated
        assert graph_layout(ir).routes == first
