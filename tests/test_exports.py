"""Exports that travel: facegan.load_generator(...).generate(...), and a torch.export program that
loads with torch alone and makes the same images."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch

import facegan
from facegan import networks, sample
from facegan.networks import sampling
from facegan.networks.exports import export_generator

from .conftest import REPO

LOAD_WITHOUT_FACEGAN = """
import sys
sys.modules["facegan"] = None  # any import of facegan fails
import torch
program = torch.export.load(sys.argv[1]).module()
z, attrs = torch.load(sys.argv[2])
torch.save(program(z, attrs), sys.argv[3])
assert not any(name.startswith("facegan") and sys.modules[name] is not None for name in sys.modules)
"""


@pytest.fixture(scope="module")
def conditional_style(tmp_path_factory):
    """A conditional stylegan2 export (z, attributes and W: every input a program can take)."""
    path = tmp_path_factory.mktemp("exports") / "g.safetensors"
    torch.manual_seed(0)
    spec = networks.make_specs("stylegan2", 32, 16, 8, 8, {}, {"Smiling": 0.4, "Eyeglasses": 0.1})[0]
    export_generator(networks.build("generator", spec), path, step=0)
    return path


def test_load_generator_generates_what_sample_draws(conditional_style):
    G = facegan.load_generator(conditional_style, device="cpu")
    assert (G.resolution, G.z_dim, G.attributes) == (32, 16, ["Smiling", "Eyeglasses"])
    images = G.generate(5, seed=3, psi=0.7, attributes={"Smiling": 1})
    z = sampling.latents(5, 16, 3)
    attrs = sampling.draw(G.module.frequencies, 5, torch.Generator().manual_seed(4), {0: 1.0})
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 32, 32)
    assert torch.equal(images, torch.cat(list(sampling.generate_uint8(G.module, z, 64, attrs, 0.7))))
    assert not torch.equal(images, G.generate(5, seed=4, psi=0.7, attributes={"Smiling": 1}))
    with pytest.raises(ValueError, match="attributes 'Male': the generator is conditioned on Smiling, Eyeglasses"):
        G.generate(2, attributes={"Male": 1})


def test_program_loads_with_torch_alone_and_makes_the_same_images(tmp_path, capsys):
    """A conditional generator's program (z and attributes in), psi refused for a G without W; an
    unconditional one takes z alone. Loaded where facegan cannot be imported: the same pixels."""
    torch.manual_seed(0)
    spec = networks.make_specs("dcgan", 32, 16, 8, 8, {}, {"Smiling": 0.4})[0]
    export_generator(networks.build("generator", spec), tmp_path / "g.safetensors", step=0)
    program, generator = tmp_path / "g.pt2", str(tmp_path / "g.safetensors")
    assert sample.main(["--generator", generator, "--export-program", str(program), "--psi", "0.7"]) == 2
    assert "has no W space" in capsys.readouterr().err
    assert sample.main(["--generator", generator, "--export-program", str(program)]) == 0
    err = capsys.readouterr().err
    assert "torch.export.load(path).module()(z [B, z_dim] float32, attrs [B, K]" in err
    digest = hashlib.sha256(program.read_bytes()).hexdigest()  # a user checks a copy against the .json
    assert json.loads(program.with_suffix(".json").read_text())["sha256"] == digest and f"sha256 {digest}" in err
    assert "a .pt2 program is code" in err and "load only programs you made or trust" in err
    assert not list(tmp_path.glob("*.tmp"))
    G = facegan.load_generator(generator, device="cpu")
    z = torch.randn(7, G.z_dim, generator=torch.Generator().manual_seed(1))  # another batch size than exported
    attrs = torch.tensor([[1.0], [0.0]]).repeat(4, 1)[:7]
    torch.save((z, attrs), tmp_path / "inputs.pt")
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_FACEGAN)
    done = subprocess.run([sys.executable, "-I", str(script), str(program), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "out.pt")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = torch.load(tmp_path / "out.pt")
    ours = torch.cat(list(sampling.generate_uint8(G.module, z, 64, attrs)))
    assert theirs.dtype == torch.uint8 and torch.equal(theirs, ours)

    from facegan.networks.portable import export_program

    g = networks.build("generator", networks.make_specs("dcgan", 32, 16, 8, 8, {})[0]).eval()
    signature = export_program(g, tmp_path / "d.pt2")
    assert signature["inputs"] == ["z [B, z_dim] float32"] and signature["attributes"] == []
    loaded = torch.export.load(tmp_path / "d.pt2").module()
    assert torch.equal(loaded(z), torch.cat(list(sampling.generate_uint8(g, z, 64))))


def test_every_place_that_shows_loading_a_program_says_it_is_code():
    """torch.export.load unpickles a weight a program marks as pickled: a tampered .pt2 runs code.
    Where the loading line is shown (the API page, the module, sample's output line), so is that."""
    from facegan.networks import portable

    for text in (portable.__doc__, (REPO / "docs" / "api.md").read_text(), (REPO / "README.md").read_text()):
        if "torch.export.load" in text:
            assert "is code" in text and "made or trust" in text, text[:200]


@pytest.mark.parametrize("kwargs, message", [
    ({"z_dim": "16"}, "generator of arch dcgan: z_dim='16': expected an integer"),
    ({"width": -8}, "generator of arch dcgan: width=-8: must be in [1, 4096]"),
    ({"z_dim": 10**12}, "generator of arch dcgan: z_dim=1000000000000: must be in [1, 4096]"),
    ({"width": 4096, "resolution": 256}, "would hold 1.83e+11 parameters (682 GiB in float32), over facegan's limit"),
    ({"width": True}, "generator of arch dcgan: width=True: expected an integer"),
])
def test_an_export_whose_spec_is_wrong_is_one_line_everywhere(tmp_path, capsys, kwargs, message):
    """A spec with a wrong type or size: a ValueError from the API and one line from sample and
    evaluate, before anything is allocated (the 682 GiB spec is refused from its parameter count)."""
    from safetensors.torch import save_file

    from facegan import evaluate
    from facegan.networks.exports import load_generator

    spec = {"arch": "dcgan", "kwargs": {"resolution": 32, "z_dim": 16, "width": 8, **kwargs}}
    path = tmp_path / "g.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"facegan": json.dumps({"facegan_network": "generator",
                                                                                 "spec": spec})})
    with pytest.raises(ValueError, match=r"^" + str(path).replace(".", r"\.") + ": generator of arch dcgan"):
        load_generator(path)
    with pytest.raises(ValueError) as raised:
        load_generator(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert sample.main(["--generator", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    (tmp_path / "real").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "real" / "a.png")
    assert evaluate.main(["--generator", str(path), "--data", str(tmp_path / "real"), "--metrics", "fid"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    from facegan import edit, project  # the toolbox's commands load the generator first, before any work

    assert project.main(["--generator", str(path), "--target", str(tmp_path / "real" / "a.png"), "--out",
                         str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert edit.main(["apply", "--generator", str(path), "--directions", str(path), "--edit", "A=1", "--out",
                      str(tmp_path / "e.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_export_metadata_nested_thousands_deep_is_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    path = tmp_path / "deep.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"facegan": "[" * 100_000 + "]" * 100_000})
    assert sample.main(["--generator", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: facegan metadata without a readable kind and spec (RecursionError" in err and err.count("\n") == 1


def test_arch_option_types_are_checked_where_specs_are_made():
    with pytest.raises(ValueError, match=r"^option 'g_mapping_layerz' is not an option of arch stylegan2 \(its "):
        networks.make_specs("stylegan2", 32, 16, 8, 8, {"g_mapping_layerz": 2})
    with pytest.raises(ValueError, match=r"^option g_mapping_layers='two': expected an integer$"):
        networks.make_specs("stylegan2", 32, 16, 8, 8, {"g_mapping_layers": "two"})
    with pytest.raises(ValueError, match=r"^option g_mixing=nan: expected a finite number$"):
        networks.make_specs("stylegan2", 32, 16, 8, 8, {"g_mixing": float("nan")})
