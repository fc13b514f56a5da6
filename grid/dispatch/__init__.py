"""What runs: the one dispatch loop on Ray, its choosers (a fixed list, adaptive seeds, an Optuna search), the worker
of one trial, DDP."""
