"""Named presets: instances of TrainConfig (docs/recipes.md says why each
value). `preset_config` picks one, with its values for the shards' resolution where it has some."""

from __future__ import annotations

import dataclasses

from facegan.training.config import TrainConfig

# The seed notebooks' DCGAN (Radford et al.): BCE with 0.9 real labels, Adam 2e-4 (0.5, 0.999).
DCGAN = TrainConfig(preset="dcgan")


# The upgrades the best GAN codebases use, with these defaults:
# - hinge loss + spectral norm on D (SNGAN, BigGAN): stable without BatchNorm in D, so D's
#   output for one image no longer depends on the rest of its batch;
# - EMA of G (ProGAN, StyleGAN, BigGAN), the cheapest FID gain there is: half-life 10 kimg,
#   ramped up over the first images as StyleGAN2 does, so early grids are faces, not grey;
# - z_dim 128; R1 and DiffAugment off: hinge + SN is stable on its own, R1 costs a second
#   backward pass, and DiffAugment pays off only with little data (turn it on, e.g.
#   --diffaugment color,translation, for a few thousand images such as the CelebA sample).
STRONG = dataclasses.replace(DCGAN, preset="strong", loss="hinge", ema=True, z_dim=128,
                             arch_options={"d_spectral_norm": True, "d_batchnorm": False})


# Tiny and quick on CPU: 32-wide networks, batch 64, short intervals.
DEMO = dataclasses.replace(DCGAN, preset="demo", z_dim=64, ngf=32, ndf=32, batch_size=64,
                           max_steps=1500, ckpt_every=500, log_every=25, sample_every=250,
                           shuffle_buffer=1000)


# R3GAN's recipe (Huang et al. 2024) with StyleGAN2-ADA's augmentation: the r3gan networks (no
# normalisation, fix-up init, grouped inverted bottlenecks), the relativistic pairing loss with
# R1 and R2, Adam (0, 0.99), EMA of G, and ADA so that a few thousand faces do not make D
# memorise. The settings that depend on the image size are in MODERN_BY_RESOLUTION (docs/recipes.md,
# says why each value): at 32 px, lr 1e-3 (the paper's 2e-4 let D pull ahead of the
# small networks) and lazy R1/R2 every 16 D steps (StyleGAN2's interval), measured on the CPU.
MODERN = dataclasses.replace(DCGAN, preset="modern", arch="r3gan", loss="rpgan", z_dim=64, beta1=0.0,
                             beta2=0.99, lr_g=2e-4, lr_d=2e-4, ema=True, ada=True, hflip=True)


MODERN_BY_RESOLUTION = {
    32: dict(ngf=16, ndf=16, batch_size=64, lr_g=1e-3, lr_d=1e-3, r1_gamma=0.05, r2_gamma=0.05, reg_every=16,
             ema_kimg=10.0, ada_kimg=20.0, arch_options={"g_blocks": 1, "d_blocks": 1}),
    64: dict(ngf=64, ndf=64, batch_size=128, r1_gamma=0.5, r2_gamma=0.5, reg_every=4, ema_kimg=20.0,
             ada_kimg=100.0),
    128: dict(ngf=32, ndf=32, batch_size=64, r1_gamma=2.0, r2_gamma=2.0, reg_every=4, ema_kimg=20.0,
              ada_kimg=100.0),
}


# StyleGAN2 with StyleGAN2-ADA's small-data ("auto") settings (Karras et al. 2020, train.py's cfg
# "auto"): the logistic non-saturating loss with lazy R1 every 16 D steps, Adam (0, 0.99) at
# lr 0.0025, a 2-layer mapping network, style mixing 0.9 and minibatch-stddev groups of 4 (the
# arch's defaults), EMA of G. By resolution, as "auto" derives them: R1 gamma = 0.0002 x res^2 /
# batch and EMA half-life = batch x 10 / 32 kimg. Widths are facegan's (smaller than "auto"'s
# 0.5 x 16384 / res channels, so a CPU can run them), as modern's are. At 8 CPU minutes it is
# behind modern and dcgan (bench/QUALITY-stylegan2.md).
STYLEGAN2 = dataclasses.replace(DCGAN, preset="stylegan2", arch="stylegan2", loss="nonsat", z_dim=128, beta1=0.0,
                                beta2=0.99, lr_g=0.0025, lr_d=0.0025, reg_every=16, ema=True)
STYLEGAN2_BY_RESOLUTION = {
    32: dict(ngf=16, ndf=16, batch_size=64, r1_gamma=0.0002 * 32**2 / 64, ema_kimg=64 * 10 / 32),
    64: dict(ngf=64, ndf=64, batch_size=64, r1_gamma=0.0002 * 64**2 / 64, ema_kimg=64 * 10 / 32),
    128: dict(ngf=32, ndf=32, batch_size=32, r1_gamma=0.0002 * 128**2 / 32, ema_kimg=32 * 10 / 32),
}


PRESETS = {"dcgan": DCGAN, "strong": STRONG, "demo": DEMO, "modern": MODERN, "stylegan2": STYLEGAN2}


# presets whose values depend on the image size
BY_RESOLUTION = {"modern": MODERN_BY_RESOLUTION, "stylegan2": STYLEGAN2_BY_RESOLUTION}


def preset_config(name: str, resolution: int | None = None) -> TrainConfig:
    """The preset `name`, with its values for `resolution` where it has some (the shards' size)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: unknown; expected one of {', '.join(PRESETS)}")
    table = BY_RESOLUTION.get(name)
    if table is None:
        return PRESETS[name]
    if resolution not in table:
        raise ValueError(f"preset {name}: no settings for {resolution} px; it has {', '.join(map(str, table))} px")
    return dataclasses.replace(PRESETS[name], **table[resolution])
