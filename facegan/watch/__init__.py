"""How a run is watched: trackers (W&B, TensorBoard), the report's plots and its page.
A docstring only: trackers import wandb and tensorboard lazily, plots import matplotlib lazily."""
