"""torch-fidelity's InceptionV3 feature extractor: which weights, checked and named.

The standard weights (converted from TensorFlow's 2015 Inception, as used by every published
FID) are fetched by torch-fidelity into torch's hub cache on a machine with internet. Offline
clusters pass the same file by path. A file that is not the standard one is accepted (tests use
a random stand-in), but every FID it produces says so: its numbers are not comparable to
published FIDs.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import torch
from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

from facegan.cli import describe_error
from facegan.files import sha256_file

EXTRACTOR = "inception-v3-compat"  # torch-fidelity's name for its TF-compatible InceptionV3
FEATURE = "2048"  # the pool3 feature FID and KID use
LOGITS = "logits_unbiased"  # the 1008-way logits IS uses (torch-fidelity's choice for ISC)
STANDARD_FILE = Path(tf_inception.URL_INCEPTION_V3).name  # weights-inception-2015-12-05-6726825d.pth
STANDARD_SHA256_PREFIX = STANDARD_FILE.rsplit("-", 1)[1].split(".")[0]  # torch hub's hash prefix


class InceptionWeightsError(ValueError):
    """A weights file that is missing or is not torch-fidelity's InceptionV3."""


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def weights_sha256(path: str | Path) -> str:
    stat = os.stat(path)
    return _sha256(str(path), stat.st_mtime_ns, stat.st_size)


def default_weights_path() -> Path:
    """Where torch-fidelity keeps the standard weights once downloaded (torch hub's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_FILE


def _build(weights: dict | None) -> tf_inception.FeatureExtractorInceptionV3:
    """torch-fidelity's extractor module, loaded from a state dict we already read safely. The
    global RNG is left untouched (module init draws from it): a training run's exact resume
    must not depend on when FID was first measured."""
    loader = mock.patch.object(tf_inception, "load_state_dict_from_url", return_value=weights)
    with loader, redirect_stdout(sys.stderr), torch.random.fork_rng(devices=[]):
        if weights is None:  # a module with fresh (random) parameters, for the stand-in
            with mock.patch.object(tf_inception.FeatureExtractorInceptionV3, "load_state_dict"):
                return tf_inception.FeatureExtractorInceptionV3(EXTRACTOR, [FEATURE, LOGITS])
        return tf_inception.FeatureExtractorInceptionV3(EXTRACTOR, [FEATURE, LOGITS])


def read_weights(path: str | Path, flag: str = "--inception-weights", expected: dict | None = None,
                 what: str = "torch-fidelity InceptionV3", error: type[ValueError] = InceptionWeightsError) -> dict:
    """The state dict in `path`, loaded without pickle and checked against the architecture
    (`expected`: parameter name -> shape, InceptionV3's by default); `error` on any fault."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{flag} {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise error(f"{flag} {path}: not a PyTorch weights file ({describe_error(err, 120)})") from None
    expected = expected if expected is not None else _expected_shapes()
    if not isinstance(state, dict) or set(state) != set(expected):
        keys = set(state) if isinstance(state, dict) else set()
        missing = sorted(set(expected) - keys)
        raise error(f"{flag} {path}: not {what} weights ({len(missing)} of {len(expected)} "
                    f"parameters missing, e.g. {missing[:1]}, and {len(keys - set(expected))} unexpected)")
    for name, shape in expected.items():
        if not isinstance(state[name], torch.Tensor):
            raise error(f"{flag} {path}: {name} holds a {type(state[name]).__name__}, not a tensor; not {what} "
                        "weights")
        if tuple(state[name].shape) != shape:
            raise error(f"{flag} {path}: {name} has shape {tuple(state[name].shape)}, {what.split()[-1]} needs {shape}")
    return state


@functools.lru_cache(maxsize=1)
def _expected_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = _build(None)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


class Inception:
    """The extractor and a description of its weights: path, sha256 and whether standard."""

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu"):
        if weights is None:
            path = default_weights_path()
            if not path.is_file():  # torch-fidelity downloads it (internet needed)
                try:
                    tf_inception.load_state_dict_from_url(tf_inception.URL_INCEPTION_V3, progress=True)
                except Exception as err:  # noqa: BLE001
                    raise InceptionWeightsError(
                        f"could not download the standard Inception weights ({type(err).__name__}); on an "
                        f"offline machine pass --inception-weights PATH to a copy of {STANDARD_FILE}") from None
            weights = path
        self.path = Path(weights).resolve()
        self.module = _build(read_weights(self.path)).to(device)
        self.sha256 = weights_sha256(self.path)
        self.standard = self.sha256.startswith(STANDARD_SHA256_PREFIX)
        self.device = torch.device(device)

    def describe(self) -> dict:
        """What every FID result carries, so a stand-in FID is never taken for a real one."""
        return {"extractor": f"torch-fidelity {EXTRACTOR} pool{FEATURE}", "weights": str(self.path),
                "weights_sha256": self.sha256, "standard_weights": self.standard}

    num_logits = 1008  # torch-fidelity's InceptionV3 head: 1008 classes, as TensorFlow's 2015 graph

    # The extractor protocol (facegan.metrics.extractors).
    kinds = ("pool", "logits")

    def dims(self) -> dict[str, int]:
        return {"pool": int(FEATURE), "logits": self.num_logits}

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pool, logits = self.features(images)
        return {"pool": pool, "logits": logits}

    def resize(self) -> str:
        return "Inception 299"

    def rows_source(self, kind: str) -> str:
        return f"{kind}-rows"

    def note(self) -> str | None:
        return None if self.standard else ("not torch-fidelity's standard Inception weights: FID, KID and IS here "
                                           "are not comparable to published ones")

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [B,3,H,W] in 0..255 -> (pool3 float32 [B,2048], logits float32 [B,1008]), from one
        forward; torch-fidelity resizes to 299 itself."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Inception takes uint8 [B,3,H,W] images, got {images.dtype} {list(images.shape)}")
        pool, logits = self.module(images.to(self.device, non_blocking=True))
        return pool.float(), logits.float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] -> pool3 features float32 [B,2048]."""
        return self.features(images)[0]


def make_standin_weights(path: str | Path, seed: int = 0) -> Path:
    """A randomly initialised InceptionV3 of torch-fidelity's layout, for tests and offline
    benchmarks. Kaiming (variance-preserving) init on every convolution: with PyTorch's default
    init every image maps to nearly the same feature and FID is ~0 between any two sets.
    Its FIDs are NOT comparable to published ones, and facegan reports them as non-standard."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _build(None)
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    return save_weights(module, path)


def save_weights(module: torch.nn.Module, path: str | Path) -> Path:
    """The module's state dict at `path`, written whole or not at all (a .partial, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(module.state_dict(), tmp)
    os.replace(tmp, path)
    return path
