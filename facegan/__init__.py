"""facegan: train GANs that generate faces, from one CPU to many GPUs.

    import facegan
    G = facegan.load_generator("runs/celeba/generator.safetensors")
    images = G.generate(16, seed=0)          # uint8 [16, 3, R, R]

`load_generator` is imported on first use, so `import facegan` stays light.
"""

from facegan.version import __version__

__all__ = ["__version__", "load_generator"]


def __getattr__(name: str):
    if name == "load_generator":
        from facegan.networks.generator import load_generator  # torch: only when a generator is wanted

        return load_generator
    raise AttributeError(f"module 'facegan' has no attribute {name!r}")
