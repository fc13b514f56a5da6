"""The statistics of a grid's results: rows per variant, paired comparisons, learning-rate stability, sequential
seeds and the seed plan, the forest of comparisons, the paper's claims. Pure numpy/scipy: no MLflow, no
matplotlib, no torch, so the driver and the reports share them."""
