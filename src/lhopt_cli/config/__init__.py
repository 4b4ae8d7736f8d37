"""Config machinery: composing Hydra configs and run folders (compose.py: `compose`, `run_folder`),
their typed schemas (schemas.py), value ranges (ranges.py), and suites as configs (suites.py)."""
