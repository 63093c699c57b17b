"""facegan: train GANs that generate faces, from one CPU to many GPUs."""

__version__ = "0.2.0"
