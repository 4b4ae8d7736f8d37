"""Scaling-law fits: compute-efficient frontiers (Kaplan) and the parametric L(N, D) (Chinchilla)."""
