"""What runs: the one dispatch loop on Ray, its choosers (a fixed list, an Optuna search), the worker of one trial,
DDP.
"""
