"""Shared fixtures: tiny CelebA-shaped trees with planted bad inputs, and packed shard sets."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
CELEBA_SAMPLE = REPO.parent / "shared" / "data" / "celeba-sample"
ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
         "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
         "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
         "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
         "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
         "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
         "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young"]
LANDMARKS = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
             "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y"]


def jpeg_bytes(i: int, mode: str = "RGB", size=(178, 218)) -> bytes:
    rng = np.random.default_rng(i)
    arr = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    img = Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if mode != "RGBA" else "PNG", quality=90)
    return buf.getvalue()


class CelebATree:
    """Files of a tiny CelebA: ids 1..12 in train, 13..15 val, 16..18 test, with planted faults.

    train: 000003 empty, 000004 truncated, 000005 not an image, 000006 listed but missing;
    000007 grayscale, 000008 CMYK, 000009 PNG bytes (RGBA) under a .jpg name; 999999.jpg is on
    disk but in no list. So train packs 12 - 4 = 8 images and skips 4.
    """

    n_train, n_val, n_test = 12, 3, 3
    bad = {"000003.jpg": "empty file", "000004.jpg": "cannot decode", "000005.jpg": "not an image",
           "000006.jpg": "missing on disk"}
    converted = {"000007.jpg": "L", "000008.jpg": "CMYK", "000009.jpg": "RGBA"}
    unlisted = "999999.jpg"

    def names(self):
        return [f"{i:06d}.jpg" for i in range(1, self.n_train + self.n_val + self.n_test + 1)]

    def partition(self, name: str) -> int:
        i = int(name[:6])
        return 0 if i <= self.n_train else (1 if i <= self.n_train + self.n_val else 2)

    def image(self, name: str) -> bytes | None:
        if name == "000003.jpg":
            return b""
        if name == "000004.jpg":
            return jpeg_bytes(4)[:600]
        if name == "000005.jpg":
            return b"this is not an image\n"
        if name == "000006.jpg":
            return None
        return jpeg_bytes(int(name[:6]), self.converted.get(name, "RGB"))

    def attrs(self, name: str) -> list[int]:
        i = int(name[:6])
        return [1 if (i + j) % 3 == 0 else -1 for j in range(len(ATTRS))]

    def landmarks(self, name: str) -> list[int]:
        i = int(name[:6])
        return [60 + i + j for j in range(len(LANDMARKS))]

    def identity(self, name: str) -> int:
        return 1000 + int(name[:6]) // 2

    def write_official(self, root: Path, zipped: bool = False) -> Path:
        import zipfile

        root.mkdir(parents=True, exist_ok=True)
        files = {n: self.image(n) for n in self.names() + [self.unlisted]}
        files = {n: b for n, b in files.items() if b is not None}
        if zipped:
            with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as z:
                for n, b in files.items():
                    z.writestr(f"img_align_celeba/{n}", b)
        else:
            (root / "img_align_celeba").mkdir()
            for n, b in files.items():
                (root / "img_align_celeba" / n).write_bytes(b)
        names = self.names()
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{n} {self.partition(n)}\n" for n in names))
        (root / "identity_CelebA.txt").write_text("".join(f"{n} {self.identity(n)}\n" for n in names))
        rows = "".join(f"{n} " + " ".join(f"{a:2d}" for a in self.attrs(n)) + "\n" for n in names)
        (root / "list_attr_celeba.txt").write_text(f"{len(names)}\n{' '.join(ATTRS)}\n{rows}")
        rows = "".join(f"{n} " + "  ".join(map(str, self.landmarks(n))) + "\n" for n in names)
        (root / "list_landmarks_align_celeba.txt").write_text(
            f"{len(names)}\n{' '.join(LANDMARKS)}\n{rows}")
        return root

    def write_kaggle(self, root: Path) -> Path:
        img_dir = root / "img_align_celeba" / "img_align_celeba"
        img_dir.mkdir(parents=True)
        for n in self.names() + [self.unlisted]:
            data = self.image(n)
            if data is not None:
                (img_dir / n).write_bytes(data)
        names = self.names()
        (root / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{n},{self.partition(n)}\n" for n in names))
        (root / "list_attr_celeba.csv").write_text(
            "image_id," + ",".join(ATTRS) + "\n"
            + "".join(f"{n}," + ",".join(map(str, self.attrs(n))) + "\n" for n in names))
        (root / "list_landmarks_align_celeba.csv").write_text(
            "image_id," + ",".join(LANDMARKS) + "\n"
            + "".join(f"{n}," + ",".join(map(str, self.landmarks(n))) + "\n" for n in names))
        return root


@pytest.fixture
def celeba_tree():
    return CelebATree()


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory) -> Path:
    """103 synthetic 32 px faces in shards of 10 (11 shards, the last one short)."""
    from facegan.data.pack import pack
    from facegan.data.sources.synthetic import SyntheticSource

    out = tmp_path_factory.mktemp("shards") / "synthetic-32"
    pack(SyntheticSource(103, seed=0, size=32), out, size=32, shard_size=10, progress=False)
    return out


def pack_small(out: Path, seed: int, num: int = 24) -> Path:
    """`num` synthetic 32 px faces in shards of 7."""
    from facegan.data.pack import pack
    from facegan.data.sources.synthetic import SyntheticSource

    pack(SyntheticSource(num, seed=seed, size=32), out, size=32, shard_size=7, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory) -> Path:
    """24 synthetic faces at 32 px in 4 shards (7, 7, 7, 3)."""
    return pack_small(tmp_path_factory.mktemp("fid") / "small", seed=1)


@pytest.fixture(scope="session")
def standin(tmp_path_factory) -> Path:
    """A random (Kaiming-initialised) InceptionV3 in torch-fidelity's layout: the real FID code
    path runs offline, and every FID it gives is reported as non-standard."""
    import torch

    from facegan.metrics.inception import make_standin_weights

    path = make_standin_weights(tmp_path_factory.mktemp("inception") / "standin-inception.pth", seed=0)
    # The classifier head (IS's logits) keeps PyTorch's default init there: its softmax is almost
    # uniform and every IS is ~1.0001. Kaiming x 10 on it (the stand-in's pool features are small,
    # std ~0.1), so logits spread by ~2 and IS tests compare numbers that differ (faces: ~1.14).
    state = torch.load(path, weights_only=True)
    head = torch.empty_like(state["fc.weight"])
    torch.nn.init.kaiming_normal_(head, generator=torch.Generator().manual_seed(0))
    state["fc.weight"] = head * 10
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def vgg_standin(tmp_path_factory) -> Path:
    """A random (Kaiming-initialised) torchvision VGG16 (553 MB): precision and recall run the
    real code path offline, reported as non-standard."""
    from facegan.metrics.vgg import make_standin_weights

    return make_standin_weights(tmp_path_factory.mktemp("vgg16") / "standin-vgg16.pth", seed=0)


@pytest.fixture(scope="session")
def dinov2_standin(tmp_path_factory) -> Path:
    """A random DINOv2 ViT-S/14 in Meta's layout (88 MB): FD-DINOv2 runs its real code path
    offline, reported as non-standard."""
    from facegan.metrics.dinov2 import make_standin_weights

    return make_standin_weights(tmp_path_factory.mktemp("dinov2") / "standin-dinov2-vits14.pth", seed=0)


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` unwritable for the block, root included: chmod is no bar to root (CI and these
    machines run as root), so there the folder is made immutable (chattr +i), and mutable after."""
    root = os.geteuid() == 0
    if root:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"chattr +i is refused here ({done.stderr.strip()}), and root writes through chmod")
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError):  # it really is read-only
            (folder / "probe").write_bytes(b"")
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True) if root else folder.chmod(0o755)


@pytest.fixture
def read_only_folder(tmp_path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    with read_only(folder):
        yield folder
