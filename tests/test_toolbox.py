"""The face toolbox: projection with LPIPS (stand-in VGG16 trunk), and attribute directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from facegan import edit as edit_cmd
from facegan import networks
from facegan import project as project_cmd
from facegan.metrics.classifier import KIND, Classifier
from facegan.networks import sampling
from facegan.networks.exports import export_generator, write_network
from facegan.toolbox import directions as dirs
from facegan.toolbox.projection import ProjectOptions, project, render_latent


def generator(arch: str = "stylegan2", seed: int = 0) -> torch.nn.Module:
    """An untrained generator at 32 px: its images already differ a lot from z to z."""
    torch.manual_seed(seed)
    return networks.build("generator", networks.make_specs(arch, 32, 32, 16, 16, {}, None)[0]).eval()


@pytest.fixture(scope="module")
def lpips_standin(vgg_standin):
    from facegan.metrics.perceptual import LPIPS

    return LPIPS(vgg_standin)


def test_lpips_is_the_lpips_package_on_the_given_trunk(lpips_standin):
    """Our distance (target features computed once) is lpips' own forward; 0 for equal images."""
    a, b = (torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (1, 2))
    ours = lpips_standin.distance(a, b)
    theirs = lpips_standin.model(lpips_standin.prepare(a), lpips_standin.prepare(b)).flatten()
    torch.testing.assert_close(ours, theirs)
    assert (ours > 0.05).all() and lpips_standin.distance(a, a).abs().max() < 1e-6
    assert not lpips_standin.standard and lpips_standin.describe()["vgg16_standard_weights"] is False


def test_projection_recovers_the_generators_own_face(lpips_standin):
    """Projecting G's own sample in W: the LPIPS it ends at is far below another sample's, and with
    a pixel term its pixels come back too (a random VGG trunk's LPIPS alone does not pin pixels
    down). The latent it returns renders the image it reports, noise maps included."""
    g = generator()
    with torch.no_grad():
        faces = g(sampling.latents(2, g.z_dim, seed=5))
    other_mse = float(((faces[1] - faces[0]) / 2).square().mean())
    other_lpips = float(lpips_standin.distance(faces[1:], faces[:1]))
    plain = project(g, faces[0], lpips_standin, ProjectOptions(steps=40, w_samples=1000), progress=False)
    assert plain.lpips < other_lpips / 5, (plain.lpips, other_lpips)
    pixels = project(g, faces[0], lpips_standin, ProjectOptions(steps=40, w_samples=1000, mse_weight=1.0),
                     progress=False)
    assert pixels.mse < other_mse / 10, (pixels.mse, other_mse)
    assert pixels.latent.shape == (g.num_ws, g.w_dim) and len(pixels.noise) == len(g.layers)
    torch.testing.assert_close(render_latent(g, pixels.tensors())[0], pixels.image, atol=1e-5, rtol=0)


def test_project_command(tmp_path, vgg_standin, capsys):
    """An aligned CelebA-sized image is cropped as the training data was; a square one is taken as
    a crop; each writes its four files and one JSON line. Bad input is one line."""
    g = generator()
    export_generator(g, tmp_path / "g.safetensors", step=0, nimg=0, ema=False, data={"crop": 140, "size": 32})
    export_generator(generator("dcgan"), tmp_path / "dcgan.safetensors", step=0, nimg=0, ema=False)
    noise = torch.randint(0, 256, (218, 178, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(noise.numpy()).save(tmp_path / "celeba.png")
    Image.fromarray(noise[:64, :64].numpy()).save(tmp_path / "square.png")
    Image.fromarray(noise[:50, :100].numpy()).save(tmp_path / "wide.png")
    base = ["--generator", str(tmp_path / "g.safetensors"), "--out", str(tmp_path / "out"), "--steps", "5",
            "--vgg16-weights", str(vgg_standin), "--no-progress"]
    assert project_cmd.main([*base, "--target", str(tmp_path / "celeba.png"), str(tmp_path / "square.png")]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in lines] == [str(tmp_path / "celeba.png"), str(tmp_path / "square.png")]
    assert "centre 140x140 crop, resized to 32 px" in err and "taken as an aligned face crop" in err
    assert "NON-STANDARD VGG16 weights" in err
    for name in ("celeba", "square"):
        for suffix in ("target.png", "projected.png", "latent.safetensors", "progress.gif"):
            assert (tmp_path / "out" / f"{name}-{suffix}").is_file()
        assert Image.open(tmp_path / "out" / f"{name}-projected.png").size == (32, 32)
        assert load_file(tmp_path / "out" / f"{name}-latent.safetensors")["w"].shape == (g.num_ws, g.w_dim)
    target = Image.open(tmp_path / "out" / "celeba-target.png")
    expected = Image.fromarray(noise.numpy()).crop((19, 39, 159, 179)).resize((32, 32), Image.Resampling.LANCZOS)
    assert target.tobytes() == expected.tobytes()
    for args, message in [
        (["--target", str(tmp_path / "wide.png")], "wide.png: 100x50 is neither an aligned CelebA image"),
        (["--target", str(tmp_path / "celeba.png"), "--vgg16-weights", str(tmp_path / "nope.pth")],
         "--vgg16-weights " + str(tmp_path / "nope.pth") + ": no such file"),
        (["--target", str(tmp_path / "celeba.png"), "--generator", str(tmp_path / "dcgan.safetensors"), "--space",
          "w"], "--space w: the generator (dcgan) has no W space; use --space z"),
        (["--target", str(tmp_path / "celeba.png"), "--out", str(tmp_path / "wide.png" / "out")],
         f"--out {tmp_path / 'wide.png' / 'out'}: cannot write there ({tmp_path / 'wide.png' / 'out'}: Not a "
         "directory)"),
    ]:
        assert project_cmd.main([*base, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_project_out_is_probed_before_any_work(tmp_path, vgg_standin, capsys, read_only_folder, monkeypatch):
    """--out on a read-only folder: one line naming it, and the projection never starts."""
    g = generator()
    export_generator(g, tmp_path / "g.safetensors", step=0, nimg=0, ema=False)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "face.png")
    monkeypatch.setattr(project_cmd, "project", lambda *a, **k: pytest.fail("projected before --out was checked"))
    assert project_cmd.main(["--generator", str(tmp_path / "g.safetensors"), "--target", str(tmp_path / "face.png"),
                             "--out", str(read_only_folder / "out"), "--steps", "2", "--vgg16-weights",
                             str(vgg_standin), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--out {read_only_folder / 'out'}: cannot write there ({read_only_folder / 'out'}: " in err, err
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def brightness_reader(tmp_path_factory):
    """The untrained style G, exported, and an attribute classifier of facegan's (same class, file
    and loader as `facegan.attributes train` makes) trained on that G's own faces to read two
    things an untrained G varies: brightness ('Pale_Skin') and red over blue ('Rosy_Cheeks')."""
    root = tmp_path_factory.mktemp("edit")
    g = generator()
    export_generator(g, root / "g.safetensors", step=0, nimg=0, ema=False)
    images = dirs.render(g, dirs.sample_latents(g, 1000, seed=7))
    bright = images.float().mean((1, 2, 3))
    red = images[:, 0].float().mean((1, 2)) - images[:, 2].float().mean((1, 2))
    labels = torch.stack([(bright > bright.median()).float(), (red > red.median()).float()], 1)
    torch.manual_seed(0)
    classifier = Classifier(32, ["Pale_Skin", "Rosy_Cheeks"], width=8)
    opt = torch.optim.Adam(classifier.parameters(), 3e-3)
    for _ in range(4):
        for i in range(0, len(images), 100):
            batch = slice(i, i + 100)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(classifier(images[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    classifier.eval()
    with torch.no_grad():
        accuracy = ((classifier(images) > 0).float() == labels).float().mean(0)
    assert (accuracy > 0.85).all(), accuracy
    write_network(classifier, root / "classifier.safetensors", KIND,
                  {"attributes": classifier.attributes,
                   "accuracy": dict(zip(classifier.attributes, accuracy.tolist()))})
    return root, g, classifier


def test_edit_fit_and_apply_move_the_classifiers_verdict(brightness_reader, lpips_standin, capsys):
    """fit finds a direction per attribute that its held-out boundary reads well; the conditioned
    one is orthogonal to the other's; apply +3 makes the classifier see the attribute in most
    faces, -3 in few, where it saw it in about two thirds of the same faces unedited."""
    root, g, classifier = brightness_reader
    fit = ["fit", "--generator", str(root / "g.safetensors"), "--classifier", str(root / "classifier.safetensors"),
           "--attributes", "Pale_Skin,Rosy_Cheeks", "--condition-on", "Rosy_Cheeks", "--samples", "1000",
           "--out", str(root / "dirs.safetensors"), "--no-progress"]
    assert edit_cmd.main(fit) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    found, meta = edit_cmd.load_directions(root / "dirs.safetensors")
    assert record["space"] == meta["space"] == "w"
    for name, d in found.items():  # a linear boundary in W reads the (nonlinear) classifier well above chance
        assert record[f"accuracy/{name}"] == round(d.accuracy, 4) and d.accuracy > d.majority + 0.15, (name, d)
    assert found["Pale_Skin"].conditioned_on == ("Rosy_Cheeks",) and found["Rosy_Cheeks"].conditioned_on == ()
    assert abs(float(found["Pale_Skin"].vector @ found["Rosy_Cheeks"].vector)) < 1e-5
    seen = {}
    for strength in ("-3", "0", "+3"):
        out = root / f"edit{strength}"
        assert edit_cmd.main(["apply", "--generator", str(root / "g.safetensors"), "--directions",
                              str(root / "dirs.safetensors"), "--edit", f"Pale_Skin={strength}", "--num", "64",
                              "--seed", "3", "--images-dir", str(out)]) == 0
        images = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
                              for p in sorted(out.glob("*.png"))])
        with torch.no_grad():
            seen[strength] = float((classifier(images)[:, 0] > 0).float().mean())
    assert len(images) == 64
    assert seen["-3"] < min(0.3, seen["0"] - 0.2) and seen["+3"] > max(0.8, seen["0"] + 0.2), seen
    assert edit_cmd.main(["apply", "--generator", str(root / "g.safetensors"), "--directions",
                          str(root / "dirs.safetensors"), "--sweep", "Pale_Skin", "--num", "3", "--columns", "5",
                          "--out", str(root / "sweep.png")]) == 0
    assert Image.open(root / "sweep.png").size == (5 * 34 + 2, 3 * 34 + 2)
    # A projected face (its w+ and noise maps) moves along the same directions.
    latent = root / "face-latent.safetensors"
    save_file(project(g, dirs.render(g, dirs.sample_latents(g, 1, seed=9))[0].float() / 127.5 - 1, lpips_standin,
                      ProjectOptions(steps=3, space="w+", w_samples=100), progress=False).tensors(), str(latent))
    assert edit_cmd.main(["apply", "--generator", str(root / "g.safetensors"), "--directions",
                          str(root / "dirs.safetensors"), "--sweep", "Pale_Skin", "--latent", str(latent), str(latent),
                          "--columns", "3", "--out", str(root / "projected.png")]) == 0
    tiles = np.array(Image.open(root / "projected.png"))
    assert tiles.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    assert tiles[2:34, 2:34].mean() < tiles[2:34, 70:102].mean()  # -3 std of Pale_Skin, then +3: brighter


def test_edit_errors_are_one_line(brightness_reader, tmp_path, capsys):
    root, g, _ = brightness_reader
    export_generator(generator("dcgan"), tmp_path / "dcgan.safetensors", step=0, nimg=0, ema=False)
    fit = ["fit", "--generator", str(root / "g.safetensors"), "--classifier", str(root / "classifier.safetensors"),
           "--out", str(tmp_path / "d.safetensors"), "--samples", "100", "--no-progress"]
    apply = ["apply", "--generator", str(root / "g.safetensors"), "--directions", str(root / "dirs.safetensors"),
             "--out", str(tmp_path / "x.png")]
    for args, message in [
        ([*fit, "--attributes", "Smiling"], "--attributes 'Smiling': " + str(root / "classifier.safetensors") +
         " knows Pale_Skin, Rosy_Cheeks"),
        ([*apply, "--edit", "Smiling=1"], "--edit 'Smiling': the directions file has Pale_Skin, Rosy_Cheeks"),
        ([*apply, "--edit", "Pale_Skin=much"], "--edit 'Pale_Skin=much': expected NAME=STRENGTH"),
        ([*apply[:2], str(tmp_path / "dcgan.safetensors"), *apply[3:], "--edit", "Pale_Skin=1"],
         "directions in w of size"),
        ([*apply[:4], str(tmp_path / "none.safetensors"), *apply[5:], "--edit", "Pale_Skin=1"],
         "none.safetensors: directions file not found"),
    ]:
        assert edit_cmd.main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_edit_apply_refuses_what_does_not_belong_to_the_generator(brightness_reader, tmp_path, capsys):
    """Directions fitted on G, applied to G' of the same spec (other weights): refused in one line
    naming the generator they belong to, unless --force-directions. Latents that are missing,
    garbage, another model's or not finite, strengths that are not finite, an --out that cannot be
    written and a directions file without attributes: one line each, before any work."""
    root, g, _ = brightness_reader
    other = tmp_path / "other.safetensors"
    export_generator(generator(seed=1), other, step=0, nimg=0, ema=False)  # same spec, other weights
    apply = ["apply", "--generator", str(root / "g.safetensors"), "--directions", str(root / "dirs.safetensors"),
             "--num", "2", "--out", str(tmp_path / "x.png")]
    on_other = [*apply[:2], str(other), *apply[3:], "--edit", "Pale_Skin=1"]
    assert edit_cmd.main(on_other) == 2
    err = capsys.readouterr().err.strip()
    assert f"{root / 'dirs.safetensors'}: its directions belong to {root / 'g.safetensors'} (weights sha256 " in err
    assert f"not to {other}" in err and "--force-directions" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.png").exists()
    assert edit_cmd.main([*on_other, "--force-directions"]) == 0
    assert "warning: --force-directions" in capsys.readouterr().err and (tmp_path / "x.png").is_file()
    assert edit_cmd.main([*apply, "--edit", "Pale_Skin=1"]) == 0  # its own generator: no word
    assert "warning" not in capsys.readouterr().err

    wide = generator()  # w of another size: another model's projection
    (tmp_path / "garbage.safetensors").write_bytes(b"\x07" * 300)
    save_file({"w": torch.zeros(wide.num_ws, wide.w_dim + 1)}, str(tmp_path / "wide.safetensors"))
    save_file({"z": torch.zeros(wide.z_dim)}, str(tmp_path / "z.safetensors"))
    save_file({"w": torch.full((wide.w_dim,), float("nan"))}, str(tmp_path / "nan.safetensors"))
    save_file({"w": torch.zeros(wide.w_dim), "noise.0": torch.zeros(1, 1, 5, 5)}, str(tmp_path / "noise.safetensors"))
    nameless = tmp_path / "nameless.safetensors"
    save_file({"Pale_Skin": torch.zeros(wide.w_dim)}, str(nameless), metadata={edit_cmd.FORMAT: '{"space": "w"}'})
    (tmp_path / "file").write_text("")
    sweep = [*apply, "--sweep", "Pale_Skin"]
    for args, message in [
        ([*sweep, "--latent", str(tmp_path / "none.safetensors")], f"--latent {tmp_path / 'none.safetensors'}: no "
         "such file"),
        ([*sweep, "--latent", str(tmp_path / "garbage.safetensors")], "garbage.safetensors: not a latent file of "
         "facegan.project"),
        ([*sweep, "--latent", str(tmp_path / "wide.safetensors")], f"wide.safetensors: w has shape [{wide.num_ws}, "
         f"{wide.w_dim + 1}], this generator takes [{wide.w_dim}] or [{wide.num_ws}, {wide.w_dim}]"),
        ([*sweep, "--latent", str(tmp_path / "z.safetensors")], "z.safetensors: holds no w (it has z)"),
        ([*sweep, "--latent", str(tmp_path / "nan.safetensors")], "w is not all finite"),
        ([*sweep, "--latent", str(tmp_path / "noise.safetensors")], "noise.0 has shape [1, 1, 5, 5]"),
        ([*apply, "--edit", "Pale_Skin=nan"], "--edit 'Pale_Skin=nan': the strength must be a finite number"),
        ([*apply, "--edit", "Pale_Skin=-inf"], "--edit 'Pale_Skin=-inf': the strength must be a finite number"),
        ([*sweep, "--range", "nan"], "--range nan: must be a positive finite number"),
        ([*sweep, "--range", "inf"], "--range inf: must be a positive finite number"),
        ([*apply[:-1], str(tmp_path / "file" / "x.png"), "--edit", "Pale_Skin=1"],
         f"--out {tmp_path / 'file'}: is a file, not a folder"),
        ([*apply[:4], str(nameless), *apply[5:], "--edit", "Pale_Skin=1"],
         f"{nameless}: not a readable facegan directions file (no attributes in its metadata)"),
    ]:
        assert edit_cmd.main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (message, err)
