"""Hypothesis strategies that write random valid specs (as YAML text) for every op family."""
from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st


def examples(at_ci: int) -> int:
    """How many examples a property gets: `at_ci` scaled by the profile (ci: 20/60 of it; thorough: 500/60),
    so tests keep their relative weights whatever the profile."""
    return max(1, round(at_ci * settings().max_examples / 60))


def _node(name: str, **fields) -> str:
    parts = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return f"  {name}: {{{parts}}}\n"


@st.composite
def masked_conv_stacks(draw, first_mask: str = "A", coupled: str = "no"):
    """PixelCNN-style stacks: mask A first, then mask-B convolutions (random kernels, dilations),
    1x1 mask-B layers, gated activations, dropout and residuals, over 1-3 channel groups.

    `coupled`: "pixel" gives PixelCNN++'s coupled likelihood with whole-pixel masks
    (channel_groups: 1); "channel_masks" the coupled likelihood over R -> G -> B masks (a bug)."""
    groups = draw(st.integers(2 if coupled == "channel_masks" else 1, 3))
    h, w = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    width = groups * draw(st.integers(1, 3))
    classes = draw(st.sampled_from([2, 3])) if groups > 1 else 2
    dist = "{type: bernoulli}" if classes == 2 and groups == 1 else f"{{type: categorical, classes: {classes}}}"
    masking = {}
    if coupled != "no":
        dist = f"{{type: discretized_logistic_mixture, classes: 4, mixtures: {draw(st.integers(1, 2))}, coupled: true}}"
        masking = {"channel_groups": 1} if coupled == "pixel" else {}
    lines = [f"name: stack\nevent: {{shape: [{groups}, {h}, {w}]}}\ndistribution: {dist}\ngraph:\n"]
    k0 = draw(st.sampled_from([1, 3, 5]))
    lines.append(_node("l0", op="masked_conv2d", inputs="[x]", channels=width, kernel=k0, mask=first_mask, activation="tanh", **masking))
    for i in range(1, draw(st.integers(1, 4)) + 1):
        kind = draw(st.sampled_from(["conv", "conv", "1x1", "gated", "dropout"]))
        if kind == "dropout":      # elementwise for the verifier; identity in eval mode
            lines.append(_node(f"l{i}", op="dropout", p=0.3))
            continue
        residual = draw(st.booleans())
        extra = {"residual": "in"} if residual else {}
        if kind == "conv":
            lines.append(_node(f"l{i}", op="masked_conv2d", channels=width, kernel=draw(st.sampled_from([1, 3, 5])),
                               dilation=draw(st.integers(1, 2)), mask="B", activation="tanh", **extra, **masking))
        elif kind == "1x1":
            lines.append(_node(f"l{i}", op="conv1x1", channels=width, mask="B", activation="tanh", **extra, **masking))
        else:
            lines.append(_node(f"l{i}", op="masked_conv2d", channels=2 * width, kernel=3, mask="B", activation="gated", **extra, **masking))
    lines.append(_node("out", op="conv1x1", channels="output", mask="B", **masking))
    return "".join(lines)


@st.composite
def gated_stacks(draw, shift: bool = True):
    """Gated PixelCNN: vertical and horizontal stacks with the down-shift link, random kernels."""
    groups = draw(st.integers(1, 2))
    h, w = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    c = 2 * groups
    dist = "{type: bernoulli}" if groups == 1 else "{type: categorical, classes: 3}"
    lines = [f"name: gated\nevent: {{shape: [{groups}, {h}, {w}]}}\ndistribution: {dist}\ngraph:\n"]
    v, hh = "x", "x"
    for i in range(draw(st.integers(1, 3))):
        k = draw(st.sampled_from([3, 5] if i == 0 else [1, 3, 5]))   # a 1-wide first layer cannot see the left pixel
        lines.append(_node(f"v{i}c", op="vertical_conv2d", inputs=f"[{v}]", channels=2 * c, kernel=k))
        lines.append(_node(f"v{i}", op="gated_tanh", inputs=f"[v{i}c]"))
        link_in = f"v{i}c"
        if shift:
            lines.append(_node(f"v{i}d", op="shift", inputs=f"[v{i}c]", by="[1, 0]"))
            link_in = f"v{i}d"
        lines.append(_node(f"l{i}", op="conv1x1", inputs=f"[{link_in}]", channels=2 * c))
        lines.append(_node(f"h{i}c", op="horizontal_conv2d", inputs=f"[{hh}]", channels=2 * c, kernel=k, mask="A" if i == 0 else "B"))
        lines.append(_node(f"h{i}s", op="add", inputs=f"[h{i}c, l{i}]"))
        lines.append(_node(f"h{i}g", op="gated_tanh", inputs=f"[h{i}s]"))
        res = {"residual": hh} if i > 0 else {}
        lines.append(_node(f"h{i}", op="conv1x1", inputs=f"[h{i}g]", channels=c, mask="B", **res))
        v, hh = f"v{i}", f"h{i}"
    lines.append(_node("out", op="conv1x1", inputs=f"[{hh}]", channels="output", mask="B"))
    return "".join(lines)


@st.composite
def causal_sequences(draw, padding: str = "causal", input_shift: int = 1):
    """WaveNet-style: shifted embedding, causal dilated convolutions, gates, residuals, skips."""
    t = draw(st.integers(3, 24))
    lines = [f"name: seq\nevent: {{shape: [{t}]}}\ndistribution: {{type: categorical, classes: 4}}\ngraph:\n"]
    lines.append(_node("e", op="embedding", inputs="[x]", channels=4, shift=input_shift))
    prev = "e"
    for i in range(draw(st.integers(1, 4))):
        k = draw(st.integers(1, 3))
        d = draw(st.sampled_from([1, 2, 4]))
        gated = draw(st.booleans())
        lines.append(_node(f"c{i}", op="causal_conv1d", inputs=f"[{prev}]", channels=8 if gated else 4, kernel=k, dilation=d,
                           padding=padding, activation="gated" if gated else "tanh"))
        lines.append(_node(f"r{i}", op="conv1x1", inputs=f"[c{i}]", channels=4, residual=prev))
        prev = f"r{i}"
    lines.append(_node("out", op="conv1x1", inputs=f"[{prev}]", channels="output"))
    return "".join(lines)


@st.composite
def orderings(draw, elements: int, shape: tuple[int, ...], allow_groups: bool):
    kind = draw(st.sampled_from(["raster", "random", "permutation"] + (["multiscale"] if allow_groups and shape[1:] == (4, 4) else [])))
    if kind == "raster":
        return "{type: raster}"
    if kind == "random":
        return f"{{type: random, seed: {draw(st.integers(0, 1000))}}}"
    if kind == "multiscale":
        return "{type: multiscale, base: 2}"
    perm = draw(st.permutations(range(elements)))
    return f"{{type: permutation, order: {list(perm)}}}"


@st.composite
def made_specs(draw):
    """MADE of random depth and widths, orderings, mask sets and direct connections (D <= 16)."""
    shape = draw(st.sampled_from([(1, 2, 2), (1, 2, 3), (1, 3, 3), (1, 2, 5), (1, 4, 4), (1, 1, 7)]))
    d = shape[0] * shape[1] * shape[2]
    ordering = draw(orderings(d, shape, allow_groups=True))
    masks = draw(st.integers(1, 3))
    lines = [f"name: made\nevent: {{shape: {list(shape)}}}\ndistribution: {{type: bernoulli}}\nordering: {ordering}\n"
             f"connectivity: {{masks: {masks}}}\ngraph:\n"]
    prev = "x"
    for i in range(draw(st.integers(1, 3))):
        lines.append(_node(f"h{i}", op="masked_linear", inputs=f"[{prev}]", features=draw(st.integers(1, 24)),
                           degrees=draw(st.sampled_from(["random", "natural"])), seed=draw(st.integers(0, 99)), activation="tanh"))
        prev = f"h{i}"
    lines.append(_node("out", op="masked_linear", inputs=f"[{prev}]", features="output", direct=str(draw(st.booleans())).lower()))
    return "".join(lines), d


@st.composite
def nade_specs(draw, real: bool = False):
    """NADE, with RNADE's activation rescaling or not; `real`: also RNADE's real-valued mixtures."""
    shape = draw(st.sampled_from([(1, 2, 2), (1, 2, 3), (1, 3, 3), (1, 1, 8), (1, 2, 5)]))
    d = shape[0] * shape[1] * shape[2]
    ordering = draw(orderings(d, shape, allow_groups=False))
    dist = "{type: bernoulli}"
    if real:
        dist = draw(st.sampled_from(["{type: bernoulli}", "{type: gaussian_mixture, mixtures: 3}", "{type: laplace_mixture, mixtures: 2}"]))
    node = _node("n", op="nade", inputs="[x]", hidden=draw(st.integers(1, 16)), rescale=str(draw(st.booleans())).lower(),
                 hidden_activation=draw(st.sampled_from(["sigmoid", "relu", "tanh"])))
    return f"name: nade\nevent: {{shape: {list(shape)}}}\ndistribution: {dist}\nordering: {ordering}\ngraph:\n" + node, d


@st.composite
def recurrent_stacks(draw, shift: bool = True):
    """PixelRNN: a mask-A convolution, then Row LSTM layers or Diagonal BiLSTM layers (the mirrored
    direction shifted down one row), with residuals."""
    groups = draw(st.integers(1, 2))
    h, w = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    hidden = 2 * groups
    dist = "{type: bernoulli}" if groups == 1 else "{type: categorical, classes: 3}"
    lines = [f"name: rnn\nevent: {{shape: [{groups}, {h}, {w}]}}\ndistribution: {dist}\ngraph:\n"]
    lines.append(_node("l0", op="masked_conv2d", inputs="[x]", channels=hidden, kernel=draw(st.sampled_from([1, 3])), mask="A"))
    prev = "l0"
    for i in range(1, draw(st.integers(1, 2)) + 1):
        if draw(st.booleans()):
            lines.append(_node(f"r{i}", op="row_lstm", inputs=f"[{prev}]", hidden=hidden, kernel=draw(st.sampled_from([1, 3, 5])),
                               mask="B", residual=prev))
            prev = f"r{i}"
            continue
        lines.append(_node(f"a{i}", op="diagonal_lstm", inputs=f"[{prev}]", hidden=hidden, direction="left"))
        lines.append(_node(f"c{i}", op="concat", inputs=f"[{prev}, x]"))
        lines.append(_node(f"b{i}", op="diagonal_lstm", inputs=f"[c{i}]", hidden=hidden, direction="right"))
        right = f"b{i}"
        if shift:
            lines.append(_node(f"d{i}", op="shift", inputs=f"[b{i}]", by="[1, 0]"))
            right = f"d{i}"
        lines.append(_node(f"s{i}", op="add", inputs=f"[a{i}, {right}]", residual=prev))
        prev = f"s{i}"
    lines.append(_node("out", op="conv1x1", inputs=f"[{prev}]", channels="output", mask="B"))
    return "".join(lines)


@st.composite
def multiscale_pyramids(draw, first_mask: str = "A", keep: str = "[1, 2, 3]", coarse_first: bool = True, post: str = "none"):
    """Multiscale PixelCNN (Reed et al. 2017): space_to_depth halvings down to a raster-ordered base
    (masked convolutions), then per level group-masked convolutions over the four sub-position
    groups (random kernels, dilations, gates, residuals) whose groups 1..3 are merged with the
    coarser prediction by depth_to_space. The arguments inject the bugs of the mutation tests;
    `post` adds a layer after the last merge: "1x1" (mask B, safe) or "3x3" (unmasked, a leak)."""
    channels = draw(st.integers(1, 2))
    base = draw(st.integers(1, 2))
    levels = draw(st.integers(1, 3 - base))
    side = base * 2 ** levels
    width = 4 * draw(st.integers(1, 2))
    dist = "{type: bernoulli}" if channels == 1 else "{type: categorical, classes: 3}"
    lines = [f"name: pyramid\nevent: {{shape: [{channels}, {side}, {side}]}}\ndistribution: {dist}\n"
             f"ordering: {{type: multiscale, base: {base}}}\ngraph:\n"]
    image = "x"
    for level in range(levels):
        lines.append(_node(f"g{level}", op="space_to_depth", inputs=f"[{image}]", factor=2))
        lines.append(_node(f"x{level}", op="select_groups", inputs=f"[g{level}]", groups=4, keep="[0]"))
        image = f"x{level}"
    lines.append(_node("b0", op="masked_conv2d", inputs=f"[{image}]", channels=2 * channels, kernel=draw(st.sampled_from([1, 3])), mask="A", activation="tanh"))
    lines.append(_node("base", op="conv1x1", inputs="[b0]", channels="output", mask="B"))
    coarse = "base"
    for level in reversed(range(levels)):
        lines.append(_node(f"u{level}_0", op="group_masked_conv2d", inputs=f"[g{level}]", channels=width,
                           kernel=draw(st.sampled_from([1, 3, 5])), mask=first_mask, activation="tanh"))
        prev = f"u{level}_0"
        for i in range(1, draw(st.integers(0, 2)) + 1):
            gated = draw(st.booleans())
            extra = {} if gated or not draw(st.booleans()) else {"residual": prev}
            lines.append(_node(f"u{level}_{i}", op="group_masked_conv2d", inputs=f"[{prev}]", channels=2 * width if gated else width,
                               kernel=draw(st.sampled_from([1, 3])), dilation=draw(st.integers(1, 2)), mask="B",
                               activation="gated" if gated else "tanh", **extra))
            prev = f"u{level}_{i}"
        lines.append(_node(f"p{level}", op="group_masked_conv2d", inputs=f"[{prev}]", channels="output", kernel=draw(st.sampled_from([1, 3])), mask="B"))
        lines.append(_node(f"n{level}", op="select_groups", inputs=f"[p{level}]", groups=4, keep=keep))
        merged = f"[{coarse}, n{level}]" if coarse_first else f"[n{level}, {coarse}]"
        lines.append(_node(f"o{level}", op="depth_to_space", inputs=merged, factor=2))
        coarse = f"o{level}"
    if post == "1x1":
        lines.append(_node("post", op="conv1x1", inputs=f"[{coarse}]", channels="output", mask="B"))
    elif post == "3x3":
        lines.append(_node("post", op="conv2d", inputs=f"[{coarse}]", channels="output", kernel=3, padding="same"))
    return "".join(lines)


@st.composite
def agnostic_specs(draw, bypass: bool = False):
    """Order-agnostic models (deep NADE, ConvNADE) over [observe x, observed], random widths,
    activations and distributions; `bypass`: one layer also reads x directly (the classic bug).
    Returns the text and the name of the bypassing node (or None)."""
    shape = draw(st.sampled_from([(1, 2, 2), (1, 2, 3), (1, 3, 3), (5,), (2, 2, 2)]))
    dist = draw(st.sampled_from(["{type: bernoulli}", "{type: categorical, classes: 3}", "{type: gaussian_mixture, mixtures: 2}"]))
    conv = len(shape) == 3 and draw(st.booleans())
    lines = [f"name: agnostic\nevent: {{shape: {list(shape)}}}\ndistribution: {dist}\nordering: {{type: agnostic}}\ngraph:\n",
             _node("seen", op="observe", inputs="[x]"),
             _node("inputs", op="concat", inputs="[seen, observed]")]
    layers = draw(st.integers(1, 2))
    skip_at = draw(st.integers(0, layers - 1)) if bypass else None
    prev = "inputs"
    for i in range(layers):
        activation = draw(st.sampled_from(["relu", "tanh", "sigmoid"]))
        # a ReLU layer of 2 or 3 units can be dead for every input under generic weights (a real
        # property of that network, which the measurement then rightly misses): keep them wider
        features = draw(st.integers(6 if activation == "relu" else 2, 12))
        lines.append(_node(f"h{i}", op="linear", inputs=f"[{prev}]", features=features, activation=activation))
        prev = f"h{i}"
        if skip_at == i:
            lines.append(_node("skip", op="linear", inputs="[x]", features=draw(st.integers(2, 12))))
            lines.append(_node(f"h{i}_joined", op="concat", inputs=f"[{prev}, skip]"))
            prev = f"h{i}_joined"
    lines.append(_node("mlp_out", op="linear", inputs=f"[{prev}]", features="output"))
    if conv:
        channels = draw(st.integers(1, 4))
        lines.append(_node("shrink", op="conv2d", inputs="[inputs]", channels=channels, kernel=2, padding="valid", activation="relu"))
        lines.append(_node("grow", op="conv2d", channels="output", kernel=2, padding="full"))
        lines.append(_node("conv_out", op="flatten"))
        lines.append(_node("out", op="add", inputs="[conv_out, mlp_out]"))
    return "".join(lines), ("skip" if bypass else None)


@st.composite
def attention_stacks(draw, strict_on_raw: bool = True, pixel_tokens: bool = True, raster: bool = False):
    """Attention mixed with masked convolutions under every ordering type: a first layer that
    does not read its own element (mask A), then attention layers (strict / non-strict / none,
    heads, windows, grouped or pixel tokens, keys from the layer below, learned positions and
    optionally the raw input) between mask-B convolutions and layer norms (per channel group).

    With `strict_on_raw` False, attention reading the raw input is non-strict (a leak); with
    `pixel_tokens` False every attention layer keeps the channel groups; with `raster` the ordering
    is raster (what cached generation serves)."""
    groups = draw(st.integers(1, 3))
    h, w = draw(st.integers(2, 4)), draw(st.integers(2, 4))
    shape = (groups, h, w)
    ordering = "{type: raster}" if raster else draw(orderings(groups * h * w, shape, allow_groups=True))
    classes = draw(st.sampled_from([2, 3]))
    width = groups * draw(st.integers(1, 2))
    lines = [f"name: attention\nevent: {{shape: {list(shape)}}}\ndistribution: {{type: categorical, classes: {classes}}}\n"
             f"ordering: {ordering}\ngraph:\n"]
    lines.append(_node("pos", op="positions", inputs="[x]", kind="learned", channels=groups))
    lines.append(_node("l0", op="masked_conv2d", inputs="[x]", channels=width, kernel=3, mask="A", activation="tanh"))
    for i in range(1, draw(st.integers(1, 3)) + 1):
        if draw(st.booleans()):
            raw = draw(st.booleans())
            causal = draw(st.sampled_from(["strict", "non_strict", "none"] if not raw else ["strict"]))
            if raw and not strict_on_raw:
                causal = "non_strict"
            # keys carry positions: tokens that read no data still differ, so every key counts
            keys = f"l{i - 1}, l{i - 1}, pos" + (", x" if raw else "")
            fields = {"inputs": f"[{keys}]", "causal": causal,
                      "heads": draw(st.integers(1, 2)), "key_channels": draw(st.integers(1, 2)), "channels": width}
            if pixel_tokens and draw(st.booleans()):
                fields["channel_groups"] = 1
            if draw(st.booleans()):
                fields["window"] = f"[[{-draw(st.integers(0, 2))}, {draw(st.integers(0, 1))}], [{-draw(st.integers(0, 2))}, {draw(st.integers(0, 2))}]]"
            pattern = draw(st.sampled_from(["", "", "stride", "chunk"]))
            if pattern:
                fields[pattern] = draw(st.integers(2, 5))
            if draw(st.booleans()):
                fields["residual"] = f"l{i - 1}"
            lines.append(_node(f"l{i}", op="causal_attention", **fields))
        elif width >= 2 * groups and draw(st.booleans()):
            lines.append(_node(f"l{i}", op="layer_norm"))
        else:
            lines.append(_node(f"l{i}", op="masked_conv2d", channels=width, kernel=draw(st.sampled_from([1, 3])), mask="B", activation="tanh"))
    lines.append(_node("out", op="conv1x1", channels="output", mask="B"))
    return "".join(lines)


@st.composite
def video_networks(draw, lstm_shift: int = 1, first_mask: str = "A", decoder_mask: str = "B", context: str = "lstm"):
    """Video Pixel Networks over events [T, C, H, W]: a framewise convolution and multiplicative
    units / residual multiplicative blocks (dilated, unmasked) encode every frame, a conv_lstm runs
    over the frames (its state shifted by `lstm_shift` frames), and a decoder of framewise masked
    convolutions and masked MUs / RMBs, or of Gated PixelCNN's two stacks built from RMBs, reads that
    state in every gate. `context: encoder` feeds the decoder the encoder itself (a bug);
    `decoder_mask: none` unmasks a decoder unit (a bug)."""
    groups = draw(st.integers(1, 2))
    t, h, w = draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(2, 4))
    width = 2 * groups
    dist = "{type: bernoulli}" if groups == 1 else "{type: categorical, classes: 3}"
    lines = [f"name: video\nevent: {{shape: [{t}, {groups}, {h}, {w}]}}\ndistribution: {dist}\n"]
    lines.append("blocks:\n  layer:\n    inputs: [v, h, s]\n    outputs: {v: v_out, h: h_out, s: s}\n    graph:\n"
                 f"      v_out: {{op: residual_multiplicative_block, inputs: [v, s], mask: vertical, hidden: {groups}, kernel: 3}}\n"
                 "      v_down: {op: shift, inputs: [v_out], by: [0, 1, 0]}\n"
                 "      link: {op: concat, inputs: [v_down, s]}\n"
                 f"      h_out: {{op: residual_multiplicative_block, inputs: [h, link], mask: horizontal, hidden: {groups}, kernel: 3}}\n")
    lines.append("graph:\n")
    lines.append(_node("e0", op="conv2d", inputs="[x]", channels=width, kernel=draw(st.sampled_from([1, 3]))))
    prev = "e0"
    for i in range(1, draw(st.integers(0, 2)) + 1):
        kind = draw(st.sampled_from(["multiplicative_unit", "residual_multiplicative_block"]))
        extra = {"hidden": groups} if kind == "residual_multiplicative_block" else {}
        lines.append(_node(f"e{i}", op=kind, inputs=f"[{prev}]", kernel=draw(st.sampled_from([1, 3])),
                           dilation=draw(st.integers(1, 2)), **extra))
        prev = f"e{i}"
    if context == "lstm":
        lines.append(_node("state", op="conv_lstm", inputs=f"[{prev}]", hidden=width, kernel=draw(st.sampled_from([1, 3])),
                           shift=lstm_shift))
        prev = "state"
    if draw(st.booleans()) and decoder_mask == "B":      # Gated PixelCNN stacks of RMBs
        lines.append(_node("v0", op="vertical_conv2d", inputs="[x]", channels=width, kernel=3))
        lines.append(_node("h0", op="horizontal_conv2d", inputs="[x]", channels=width, kernel=5, mask=first_mask))
        lines.append(f"  dec: {{block: layer, inputs: [v0, h0, {prev}], repeat: {{times: {draw(st.integers(1, 2))}}}}}\n")
        lines.append(_node("out", op="conv1x1", inputs="[dec.h]", channels="output", mask="B"))
        return "".join(lines)
    lines.append(_node("d0", op="masked_conv2d", inputs="[x]", channels=width, kernel=draw(st.sampled_from([1, 3])), mask=first_mask))
    dec = "d0"
    for i in range(1, draw(st.integers(1, 2)) + 1):
        kind = draw(st.sampled_from(["multiplicative_unit", "residual_multiplicative_block"]))
        extra = {"hidden": groups} if kind == "residual_multiplicative_block" else {}
        mask = decoder_mask if i == 1 else "B"
        lines.append(_node(f"d{i}", op=kind, inputs=f"[{dec}, {prev}]", kernel=3 if mask == "none" else draw(st.sampled_from([1, 3])),
                           mask=mask, **extra))
        dec = f"d{i}"
    lines.append(_node("out", op="conv1x1", inputs=f"[{dec}]", channels="output", mask="B"))
    return "".join(lines)


@st.composite
def pixelvae_specs(draw, leak: bool = False):
    """PixelVAEs: a convolutional encoder downsampling by 1, 2 or 4 (space_to_depth) to a latent
    map, a standard-normal prior, and a masked decoder reading z in random layers. `leak` also
    feeds the decoder an encoder feature map of x (the bug the verifier must report)."""
    factor = draw(st.sampled_from([1, 2, 4]))
    h, w = factor * draw(st.integers(1, 2)), factor * draw(st.integers(1, 2))
    if h * w < 4:
        h, w = 2 * factor, 2 * factor
    c = draw(st.integers(1, 3))
    width = draw(st.integers(2, 4))
    enc = [_node("e0", op="conv2d", inputs="[x]", channels=width, kernel=draw(st.sampled_from([1, 3])), activation="relu")]
    taps = [("e0", width, 1)]
    channels, scale = width, 1
    while scale < factor:
        enc.append(_node(f"d{scale}", op="space_to_depth", factor=2))
        channels, scale = channels * 4, scale * 2
        taps.append((f"d{scale // 2}", channels, scale))
        enc.append(_node(f"e{scale}", op="conv2d", channels=width, kernel=3, activation="tanh"))
        channels = width
        taps.append((f"e{scale}", width, scale))
    enc.append(_node("post", op="conv1x1", channels=2 * c))
    conditioning = f"      z: {{type: local, channels: {c}, upsample: {factor}, from: latent}}\n"
    tap = draw(st.sampled_from(taps)) if leak else None
    if tap is not None:
        conditioning += f"      feat: {{type: local, channels: {tap[1]}, upsample: {tap[2]}, from: encoder.{tap[0]}}}\n"
    layers = draw(st.integers(1, 3))
    reads_z = draw(st.lists(st.booleans(), min_size=layers + 1, max_size=layers + 1))
    reads_z[draw(st.integers(0, layers))] = True                           # z is read somewhere
    leak_at = draw(st.integers(0, layers)) if leak else -1
    dec = []
    for i in range(layers + 1):
        cond = (["z"] if reads_z[i] else []) + (["feat"] if i == leak_at else [])
        extra = {"condition": f"[{', '.join(cond)}]"} if cond else {}
        if i == 0:
            dec.append(_node("l0", op="masked_conv2d", inputs="[x]", channels=4, kernel=draw(st.sampled_from([3, 5])), mask="A",
                             activation="tanh", **extra))
        else:
            dec.append(_node(f"l{i}", op="masked_conv2d", channels=4, kernel=draw(st.sampled_from([1, 3])), mask="B",
                             activation="tanh", **extra))
    dec.append(_node("out", op="conv1x1", channels="output", mask="B"))
    indent = lambda lines: "".join("    " + line for line in lines)  # noqa: E731
    return (f"name: vae\nevent: {{shape: [1, {h}, {w}]}}\nlatent: {{shape: [{c}, {h // factor}, {w // factor}]}}\n"
            f"objective: {{type: elbo}}\nparts:\n  encoder:\n    role: encoder\n    graph:\n{indent(enc)}"
            f"  prior: {{role: prior, type: standard_normal}}\n"
            f"  decoder:\n    role: decoder\n    distribution: {{type: bernoulli}}\n    conditioning:\n{conditioning}"
            f"    graph:\n{indent(dec)}")


@st.composite
def flow_students(draw, shift: bool = True):
    """Students of 1-3 inverse autoregressive flows over a short sequence: each flow a shifted (or,
    with `shift` False in one flow, unshifted: the bug) stack of dilated causal convolutions, some
    gated, reading a local context in some layers."""
    length = draw(st.sampled_from([8, 12, 16]))
    flows = draw(st.integers(1, 3))
    broken = draw(st.integers(0, flows - 1)) if not shift else -1
    context = draw(st.booleans())
    lines = [f"name: student\nevent: {{shape: [{length}]}}\nobjective: {{type: distillation}}\nparts:\n"]
    for f in range(flows):
        lines.append(f"  flow{f}:\n    role: flow\n")
        if context:
            lines.append("    conditioning: {c: {type: local, channels: 2, upsample: 4}}\n")
        lines.append("    graph:\n")
        first = "[x]"
        if f != broken:
            lines.append("    " + _node("past", op="shift", inputs="[x]", by="[1]"))
            first = "[past]"
        for i in range(draw(st.integers(1, 3))):
            gated = draw(st.booleans())
            cond = {"condition": "[c]"} if context and draw(st.booleans()) else {}
            lines.append("    " + _node(f"l{i}", op="causal_conv1d", **({"inputs": first} if i == 0 else {}),
                                        channels=4 if gated else 3, kernel=draw(st.sampled_from([1, 2, 3])),
                                        dilation=draw(st.sampled_from([1, 2, 4])), activation="gated" if gated else "tanh", **cond))
        lines.append("    " + _node("head", op="conv1x1", channels="output"))
    return "".join(lines)
