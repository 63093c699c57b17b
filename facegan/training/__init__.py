"""Training: the config and its presets, the loop (loop.py) with its step (step.py) and upkeep
(upkeep.py), the run's state, checkpoints, lock, stop signals and health, and the components
they drive (models, losses, augmentation, EMA, schedules). The only wing that knows Accelerate,
DDP, precision and signals.

A docstring only: import the module you need (`from facegan.training.loop import train`)."""
