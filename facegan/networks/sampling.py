"""Everything about drawing images from a generator, in one place: latents (with truncation), the
attributes a conditional G is asked for (draws at the training frequencies, fixed settings,
sweeps), uint8 generation in batches, grids, and interpolation. The sample command, training's
fixed-latent grids, the metrics and the benches all use these. Pure torch: no devices chosen,
no distribution.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from facegan.networks.common import no_attributes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1,1] float -> uint8 0..255, rounded as torchvision's save_image does, so a PNG written
    by `facegan.sample --images-dir` holds exactly the pixels the metrics saw."""
    return ((images.float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


def latents(num: int, z_dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """The same N latents whatever the world size: drawn on the CPU from their own generator.
    With `truncation`, components beyond +-truncation are redrawn (the truncation trick)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, z_dim, generator=gen)
    if truncation is not None:
        if not (math.isfinite(truncation) and truncation > 0):  # nan would pass `<= 0` and truncate nothing
            raise ValueError(f"--truncation {truncation}: must be a positive finite number")
        while (outside := z.abs() > truncation).any():
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
    return z


def condition(z: torch.Tensor, attrs: torch.Tensor | None) -> torch.Tensor:
    """G's c for the latents z: `attrs`, or the zero-width c of an unconditional G. (The adapter
    for callers that hold no attributes; everything below it calls G(z, c).)"""
    return no_attributes(z) if attrs is None else attrs


def check_psi(g: torch.nn.Module, psi: float | None, what: str = "the generator") -> None:
    """One line where --psi cannot apply: a G without W, or psi outside [0, 1]."""
    if psi is None:
        return
    if g.space != "w":
        arch = getattr(g, "spec", {}).get("arch", type(g).__name__)
        raise ValueError(f"--psi: {what} ({arch}) has no W space to truncate in; --truncation T redraws z "
                         "components beyond +-T instead")
    if not 0 <= psi <= 1:
        raise ValueError(f"--psi {psi:g}: must be in [0, 1] (1: no truncation, 0: the average face)")


@contextlib.contextmanager
def evaluating(net: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`net` in eval mode (BatchNorm's running statistics, a style G's fixed noise) for the block,
    then back in the mode it had."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


@torch.no_grad()
def generate_uint8(g: torch.nn.Module, z: torch.Tensor, batch_size: int,
                   attrs: torch.Tensor | None = None, psi: float | None = None) -> Iterator[torch.Tensor]:
    """G(z) (G(z, attrs) for a conditional G) in batches as uint8 images, G in eval mode:
    BatchNorm uses its running statistics, so an image does not depend on its batch-mates, the
    batch size or the number of ranks. `psi` truncates a style G's w (check_psi first)."""
    device = next(g.parameters()).device
    kwargs = {} if psi is None else {"psi": psi}
    c = condition(z, attrs)
    with evaluating(g):
        for start in range(0, len(z), batch_size):
            batch = slice(start, start + batch_size)
            yield to_uint8(g(z[batch].to(device), c[batch].to(device), **kwargs))


@torch.no_grad()
def w_walk(g: torch.nn.Module, starts: torch.Tensor, ends: torch.Tensor, c: torch.Tensor, steps: int,
           psi: float = 1.0) -> torch.Tensor:
    """Walks in W as uint8 [N*steps,3,H,W], walk-major: w moves on a straight line from each start's
    w to its end's (W is where a style G's faces change smoothly; z is only its input); c [N,K]
    is held along each walk."""
    with evaluating(g):
        device = next(g.parameters()).device
        a, b = (g.map(x.to(device), c.to(device), psi) for x in (starts, ends))  # [N,w_dim]
        t = torch.linspace(0, 1, steps, device=device)[None, :, None]
        ws = a[:, None].lerp(b[:, None], t).flatten(0, 1)  # [N*steps, w_dim]
        return torch.cat([to_uint8(g.synthesis(ws[i:i + 64])) for i in range(0, len(ws), 64)])


@torch.no_grad()
def style_mix(g: torch.nn.Module, rows: tuple[torch.Tensor, torch.Tensor],
              columns: tuple[torch.Tensor, torch.Tensor], layers: range, psi: float = 1.0) -> torch.Tensor:
    """StyleGAN's style-mixing figure as uint8 [(R+1)*(C+1),3,H,W], row-major: the top row shows
    the column sources, the left column the row sources (the corner is black), and cell (r, c)
    is row r's face with the w of `layers` taken from column c. `rows`, `columns`: (z, c) each."""
    with evaluating(g):
        device = next(g.parameters()).device
        w_rows, w_cols = (g.map(z.to(device), c.to(device), psi)[:, None].expand(-1, g.num_ws, -1)
                          for z, c in (rows, columns))
        take = torch.zeros(g.num_ws, dtype=torch.bool, device=device)
        take[list(layers)] = True
        mixed = torch.where(take[None, None, :, None], w_cols[None], w_rows[:, None])  # [R,C,num_ws,w_dim]
        top = to_uint8(g.synthesis(w_cols))
        left = to_uint8(g.synthesis(w_rows))
        cells = to_uint8(g.synthesis(mixed.flatten(0, 1))).view(len(w_rows), len(w_cols), *top.shape[1:])
        corner = torch.zeros_like(top[:1])
        grid = [torch.cat([corner, top])] + [torch.cat([left[r:r + 1], cells[r]]) for r in range(len(w_rows))]
        return torch.cat(grid)


@torch.no_grad()
def mapped_w(g: torch.nn.Module, num: int, seed: int, batch_size: int = 1000) -> torch.Tensor:
    """[num, w_dim] on the CPU: a style G's w of `num` seeded latents (a conditional G's with
    attributes drawn at their training frequencies), mapped in eval mode without moving w_avg."""
    z = latents(num, g.z_dim, seed)
    c = latent_attributes(g, num, seed)
    device = next(g.parameters()).device
    with evaluating(g):
        return torch.cat([g.map(x.to(device), a.to(device), update=False).cpu()
                          for x, a in zip(z.split(batch_size), c.split(batch_size))])


def latent_attributes(g: torch.nn.Module, num: int, seed: int) -> torch.Tensor:
    """[num, K] attributes drawn from a conditional G's training frequencies (seeded apart from
    the latents); [num, 0] for an unconditional G."""
    return draw(g.frequencies, num, torch.Generator().manual_seed(seed + 1))


def draw(frequencies: list[float], num: int, generator: torch.Generator | None = None,
         fixed: dict[int, float] | None = None) -> torch.Tensor:
    """[num, K] attribute vectors: attribute k true with probability frequencies[k], drawn
    independently, except the columns `fixed` ({index: 0.0 or 1.0}), set for every row."""
    p = torch.tensor(frequencies, dtype=torch.float32).expand(num, len(frequencies))
    out = (torch.rand(p.shape, generator=generator) < p).float()
    for k, value in (fixed or {}).items():
        out[:, k] = value
    return out


def settings(k: int) -> torch.Tensor:
    """A few settings of k attributes to show side by side: none, each alone, and all (when k > 1)."""
    rows = [torch.zeros(k), *torch.eye(k)]
    return torch.stack(rows + ([torch.ones(k)] if k > 1 else []))


def grid_settings(k: int, num: int, columns: int) -> torch.Tensor:
    """[num, k] attributes of a grid of `num` images, `columns` a row: row r shows setting
    r mod S of `settings(k)`, so each setting appears on whole rows, with other latents."""
    table = settings(k)
    return table[torch.arange(num) // columns % len(table)]


def parse_settings(text: str, names: list[str], flag: str = "--attributes") -> dict[int, float]:
    """'Smiling=1,Eyeglasses=0' -> {index in names: 1.0 or 0.0}; a name the generator was not
    conditioned on, or a value other than 0/1, is a one-line error."""
    fixed: dict[int, float] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or value.strip() not in ("0", "1"):
            raise ValueError(f"{flag} {part!r}: expected NAME=0 or NAME=1")
        if name.strip() not in names:
            raise ValueError(f"{flag} {name.strip()!r}: the generator is conditioned on "
                             f"{', '.join(names) if names else 'no attributes'}")
        fixed[names.index(name.strip())] = float(value.strip())
    return fixed


def sweep_attributes(base: torch.Tensor, swept: list[int]) -> torch.Tensor:
    """A sweep grid's attributes: for each row of `base` [R,K], 2 columns per swept attribute
    (off, on), the others as in the row -> [R * 2 * len(swept), K], row-major."""
    rows = []
    for row in base:
        for k in swept:
            for value in (0.0, 1.0):
                cell = row.clone()
                cell[k] = value
                rows.append(cell)
    return torch.stack(rows)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b at fractions t: [N,Z],[N,Z],[T] -> [N,T,Z]."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]  # [N,1,1]
    t = t[None, :, None]
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a[:, None] + (torch.sin(t * omega) / so) * b[:, None]


def tile(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """[N,C,H,W] -> [C, H', W']: `nrow` images a row, `padding` px of zeros around and between
    them, laid out as torchvision's make_grid does (whose import costs a process ~2 s: it loads
    torch._dynamo). One image is returned as it is, as make_grid does."""
    if len(images) == 1:
        return images[0]
    n, c, h, w = images.shape
    columns = min(nrow, n)
    rows = math.ceil(n / columns)
    grid = images.new_zeros(c, rows * (h + padding) + padding, columns * (w + padding) + padding)
    for i, image in enumerate(images):
        top, left = padding + i // columns * (h + padding), padding + i % columns * (w + padding)
        grid[:, top:top + h, left:left + w] = image
    return grid


def grid_image(images: torch.Tensor, nrow: int) -> Image.Image:
    """uint8 [N,3,H,W] -> one PIL image with a 2 px border, as the training grids."""
    return Image.fromarray(tile(images, nrow).permute(1, 2, 0).numpy())


def write_gif(frames: list[Image.Image], path: Path, duration_ms: int = 80) -> None:
    """An endlessly looping GIF of `frames`."""
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)


def grid_columns(num: int) -> int:
    """Images per row of a sample grid of `num` (square where `num` is a square)."""
    return int(math.sqrt(num))


@torch.no_grad()
def write_samples(g: torch.nn.Module, z: torch.Tensor, path: Path,
                  attrs: torch.Tensor | None = None) -> torch.Tensor | None:
    """A PNG grid of G(z) (G(z, attrs) for a conditional G) for the fixed latents, G in eval mode
    (BatchNorm running statistics); returns its uint8 [H,W,3] pixels, or None, writing nothing,
    when G's output is not finite."""
    device = next(g.parameters()).device
    with evaluating(g):
        images = g(z.to(device), condition(z, attrs).to(device)).float().cpu()  # [N,3,H,W] in [-1,1]
    if not torch.isfinite(images).all():
        return None
    grid = tile(images.clamp(-1, 1).add(1).div(2), grid_columns(len(images)))  # [3,H',W'] in [0,1]
    # Rounded as torchvision's save_image does. Trackers get these uint8 pixels, not floats in
    # [0,1], which wandb casts straight to uint8 (every grid black).
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy()).save(path)
    return pixels
