"""The torch-free part of the trainer: trial configs, gate specs, the variant catalog, presets, model cost, results
and metric names. The grid driver imports only this (and trainer/corpus.py).
"""
