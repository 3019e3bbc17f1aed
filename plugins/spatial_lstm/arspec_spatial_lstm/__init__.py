"""The Spatial LSTM for arspec, as a package of its own: a primitive declared by its step (no
kernel, no engine code: arspec derives them) and the op specs use, registered through the
`arspec.primitives` and `arspec.ops` entry points."""
