"""facegan's DINOv2 against Meta's code, with the same weights, side by side.

    python bench/dinov2_parity.py --repo PATH_TO_DINOV2_CHECKOUT [--weights FILE] [--models s,b]

PATH is a checkout of github.com/facebookresearch/dinov2 (torch.hub keeps one in
$TORCH_HOME/hub/facebookresearch_dinov2_main once torch-fidelity has used it). Meta's model is
built from it with `torch.hub.load(PATH, "dinov2_vit?14", source="local", pretrained=False)`, given
the same state dict as facegan's, and both take the same images through torch-fidelity's
preprocessing (from 32, 64, 178x218 and 224 px). Without --weights each model gets a random
stand-in (facegan.metrics.dinov2.make_standin_weights); with --weights, Meta's file.
Prints the largest absolute and relative feature differences and each side's seconds per batch
(preprocessing included).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegan.metrics import dinov2  # noqa: E402


def meta_model(repo: Path, model: str, state: dict) -> torch.nn.Module:
    import os

    os.environ["XFORMERS_DISABLED"] = "1"  # as torch-fidelity sets it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.hub.load(str(repo), dinov2.MODELS[model].hub, source="local", pretrained=False)
    module.load_state_dict(state, strict=True)
    return module.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", type=Path, required=True, help="a checkout of facebookresearch/dinov2")
    p.add_argument("--weights", help="Meta's *_pretrain.pth (default: a random stand-in per model)")
    p.add_argument("--models", default="s,b", help="comma list of s, b, l")
    p.add_argument("--images", type=int, default=8, help="images per size")
    args = p.parse_args()
    torch.manual_seed(0)
    sizes = [(32, 32), (64, 64), (218, 178), (224, 224)]
    print(f"{'model':<16} {'input':>9} {'max |diff|':>11} {'max rel':>9} {'facegan s':>9} {'Meta s':>8}")
    for letter in args.models.split(","):
        model = f"dinov2-vit-{letter}-14"
        with tempfile.TemporaryDirectory() as tmp:
            path = args.weights or dinov2.make_standin_weights(Path(tmp) / "standin.pth", model)
            ours = dinov2.DINOv2(path, "cpu", model)
            state = torch.load(path, map_location="cpu", weights_only=True)
        theirs = meta_model(args.repo, model, state)
        for h, w in sizes:
            images = torch.randint(0, 256, (args.images, 3, h, w), dtype=torch.uint8)
            started = time.perf_counter()
            a = ours(images)
            ours_s = time.perf_counter() - started
            started = time.perf_counter()
            with torch.no_grad():  # Meta's model behind torch-fidelity's own preprocessing
                x = dinov2.interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(224, 224),
                                                                     align_corners=False)
                b = theirs((x - ours.mean) / ours.std)
            theirs_s = time.perf_counter() - started
            diff = (a - b).abs().max().item()
            rel = diff / b.abs().max().item()
            print(f"{model:<16} {f'{h}x{w}':>9} {diff:>11.2e} {rel:>9.1e} {ours_s:>9.2f} {theirs_s:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
