"""The spec layer: YAML with source positions, pydantic models, expansion of blocks and repeats."""
