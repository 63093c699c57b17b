"""FID feature extraction speed: facegan.metrics against torch-fidelity's own generator path.

    python bench/fid.py                      # CPU: 200 images (Inception at 299 px is slow on a CPU)
    python bench/fid.py --num 50000          # GPU default: FID-50k's generated side

Both rows generate --num images with the same DCGAN generator (64 px, random init: the time
does not depend on the weights), turn them into uint8, run torch-fidelity's InceptionV3 and
reduce the 2048-d features to mean and covariance:

  torch-fidelity           GenerativeModelModuleWrapper -> get_featuresdict_from_generative_model
                           (features gathered on the host) -> fid_features_to_statistics (np.cov)
  facegan.metrics          generator_stats: float64 moments accumulated on the device

Inception weights: a stand-in of the standard architecture unless --weights is given (this
machine cannot download the standard ones); the timing is the same for any weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegan import networks  # noqa: E402
from facegan.metrics import features
from facegan.metrics.inception import Inception, make_standin_weights  # noqa: E402
from facegan.networks import sampling


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def torch_fidelity_stats(g: torch.nn.Module, inception: Inception, num: int, batch: int, z_dim: int) -> None:
    from torch_fidelity.generative_model_modulewrapper import GenerativeModelModuleWrapper
    from torch_fidelity.metric_fid import fid_features_to_statistics
    from torch_fidelity.utils import get_featuresdict_from_generative_model

    class Uint8(torch.nn.Module):  # torch-fidelity wants uint8 images from the generator
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, z):
            return sampling.to_uint8(self.g(z))

    wrapped = GenerativeModelModuleWrapper(Uint8(g), z_dim, "normal", 0)
    cuda = inception.device.type == "cuda"
    feats = get_featuresdict_from_generative_model(wrapped, inception.module, num, batch, cuda, 0, False)
    fid_features_to_statistics(feats["2048"])


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num", type=int, default=50000 if cuda else 200)
    p.add_argument("--batch", type=int, default=500 if cuda else 50)
    p.add_argument("--weights", help="InceptionV3 weights (default: a stand-in of the same architecture)")
    p.add_argument("--skip-baseline", action="store_true", help="time facegan only")
    args = p.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    g_spec, _ = networks.make_specs("dcgan", resolution=64, z_dim=100, ngf=64, ndf=64, options={})
    g = networks.build("generator", g_spec).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        inception = Inception(args.weights or make_standin_weights(Path(tmp) / "standin.pth"), device)
    name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{name}; torch {torch.__version__}; {args.num} generated 64 px images, Inception batch {args.batch}; "
          f"weights {'given' if args.weights else 'stand-in'} (standard: {inception.standard})", flush=True)
    # Warm-up: cuDNN algorithm choice, allocations.
    features.generator_stats(inception, g, 2 * args.batch, g.z_dim, batch_size=args.batch)
    rows = []
    if not args.skip_baseline:
        sync(device)
        start = time.perf_counter()
        torch_fidelity_stats(g, inception, args.num, args.batch, g.z_dim)
        sync(device)
        rows.append(("torch-fidelity generator path", time.perf_counter() - start))
    sync(device)
    start = time.perf_counter()
    features.generator_stats(inception, g, args.num, g.z_dim, batch_size=args.batch)
    sync(device)
    rows.append(("facegan.metrics.generator_stats", time.perf_counter() - start))
    first = rows[0][1]
    print(f"{'path':<36}{'seconds':>9}{'img/s':>9}{'vs first':>10}")
    for label, seconds in rows:
        print(f"{label:<36}{seconds:>9.1f}{args.num / seconds:>9.0f}{first / seconds:>9.2f}x")


if __name__ == "__main__":
    main()
