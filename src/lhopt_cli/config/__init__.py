"""Config machinery: composing Hydra configs (compose.py), their typed schemas (schemas.py) and
value ranges (ranges.py)."""
