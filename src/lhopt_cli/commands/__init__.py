"""The command jobs: each turns its composed config into a plan and runs it (train-policy,
baseline-grid, evaluate, scaling-fit; cli.py is the `lhopt` entry point that composes configs)."""
