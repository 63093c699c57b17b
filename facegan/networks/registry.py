"""The architecture registry. A network is described by a spec
{"arch": name, "kwargs": {...}}: `build` makes it, and exports store it, so a saved network loads
from its file alone whatever its architecture.

An arch is one module in ARCHS defining `Options` (a frozen dataclass of g_* and d_* fields, one
trailing comment each: the --help text), `Generator(resolution, z_dim, width, **g_options)` and
`Discriminator(resolution, width, **d_options)`, subclasses of common.GeneratorNet and
DiscriminatorNet (the one way to call them). A generator has int attributes `z_dim` and
`resolution` and maps (z [B,z_dim], c [B,0]) -> images [B,3,R,R] in [-1,1]; a discriminator has
`resolution` and maps (images, c) -> logits [B], as head(features(x)) with `feature_dim` features
(what a projection discriminator needs). Pure modules: no devices, precision, distribution or files.

A spec with "condition": {"attributes": [names], "frequencies": [...]} builds the conditional
pair of `conditional.py`: G(z, attrs) and the projection D(x, attrs).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import math
import typing
from types import ModuleType

import torch
from torch import nn

from facegan.cli import describe_error, field_comments
from facegan.networks import conditional
from facegan.networks.common import RESOLUTIONS, DiscriminatorNet, GeneratorNet

# The registry: arch name -> module path. Adding an architecture is one module and one line here.
ARCHS = {
    "dcgan": "facegan.networks.dcgan",
    "resnet": "facegan.networks.resnet",
    "r3gan": "facegan.networks.r3gan",
    "stylegan2": "facegan.networks.stylegan2",
}
KINDS = {"generator": "Generator", "discriminator": "Discriminator"}
PREFIXES = {"generator": "g_", "discriminator": "d_"}  # which network an option belongs to


MAX_INT = 4096  # the largest size, width, depth or group a spec or option may ask for
MAX_PARAMETERS = 2**30  # a network asking for more (4 GiB in float32) is refused before it allocates
AT_LEAST_ONE = ("resolution", "z_dim", "width")  # spec kwargs for which 0 means nothing


def check_value(name: str, value: object, kind: object, where: str = "") -> None:
    """One line (`where` + `name`=value) where a spec kwarg or arch option has another type than
    its annotation (an int is no bool, a float is finite) or an int outside [0, MAX_INT] (at
    least 1 for AT_LEAST_ONE)."""
    if kind is bool:
        ok, wanted = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        wanted = "a finite number"
    else:
        return
    if not ok:
        raise ValueError(f"{where}{name}={value!r}: expected {wanted}")
    low = 1 if name in AT_LEAST_ONE else 0
    if kind is int and not low <= value <= MAX_INT:
        raise ValueError(f"{where}{name}={value}: must be in [{low}, {MAX_INT}]")


def check_options(arch: str, options: dict, where: str = "option") -> None:
    """One line for an option `arch` does not have (naming those it has) or a value of the wrong type."""
    cls = arch_options(arch)
    hints = typing.get_type_hints(cls)
    for name, value in options.items():
        if name not in hints:
            raise ValueError(f"{where} {name!r} is not an option of arch {arch} "
                             f"(its options: {', '.join(hints) or 'none'})")
        check_value(name, value, hints[name], f"{where} ")


def arch_module(arch: str) -> ModuleType:
    """The registered module of `arch`, imported on first use (so a registry line costs nothing)."""
    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r}: unknown; registered: {', '.join(ARCHS)}")
    try:
        return importlib.import_module(ARCHS[arch])
    except ModuleNotFoundError as e:
        if e.name and ARCHS[arch].startswith(e.name):  # the registry names a module that is not there
            raise ValueError(f"arch {arch!r}: its module {ARCHS[arch]} cannot be imported ({e})") from None
        raise


def arch_options(arch: str) -> type:
    """The arch's `Options` dataclass, checked: every field is named g_* or d_*."""
    options = getattr(arch_module(arch), "Options", None)
    if not dataclasses.is_dataclass(options):
        raise ValueError(f"arch {arch!r}: {ARCHS[arch]} defines no Options dataclass")
    for f in dataclasses.fields(options):
        if not f.name.startswith(tuple(PREFIXES.values())):
            raise ValueError(f"arch {arch!r}: option {f.name!r} must start with g_ or d_ (the network it goes to)")
    return options


def _default(f: dataclasses.Field) -> object:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def option_fields() -> dict[str, tuple[type, object, str, list[str]]]:
    """Every option of every registered arch: name -> (type, default, help, [archs having it]).
    An option several archs declare takes the first one's type, default and help."""
    fields: dict[str, tuple[type, object, str, list[str]]] = {}
    for arch in ARCHS:
        options = arch_options(arch)
        hints, helps = typing.get_type_hints(options), field_comments(options)
        for f in dataclasses.fields(options):
            if f.name in fields:
                fields[f.name][3].append(arch)
            else:
                fields[f.name] = (hints[f.name], _default(f), helps.get(f.name, ""), [arch])
    return fields


def make_specs(arch: str, resolution: int, z_dim: int, ngf: int, ndf: int, options: dict,
               condition: dict[str, float] | None = None) -> tuple[dict, dict]:
    """(g_spec, d_spec) of `arch`. `options` names fields of the arch's Options (the others keep
    their defaults); g_* ones go to the generator's kwargs and d_* ones to the discriminator's.
    `condition` ({attribute: training frequency}, in order) makes them conditional."""
    check_options(arch, options)
    chosen = dataclasses.asdict(arch_options(arch)(**options))
    g_opts, d_opts = ({k[2:]: v for k, v in chosen.items() if k.startswith(PREFIXES[kind])} for kind in KINDS)
    g_spec = {"arch": arch, "kwargs": {"resolution": resolution, "z_dim": z_dim, "width": ngf, **g_opts}}
    d_spec = {"arch": arch, "kwargs": {"resolution": resolution, "width": ndf, **d_opts}}
    if condition:
        g_spec["condition"] = {"attributes": list(condition), "frequencies": list(condition.values())}
        d_spec["condition"] = {"attributes": list(condition)}
    return g_spec, d_spec


def _condition(kind: str, spec: dict) -> tuple[list[str], list[float]] | None:
    """(attributes, frequencies) of a conditional spec, checked; None for an unconditional one."""
    if "condition" not in spec:
        return None
    cond = spec["condition"]
    names = cond.get("attributes") if isinstance(cond, dict) else None
    freqs = cond.get("frequencies", [0.5] * len(names or [])) if isinstance(cond, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)
            and isinstance(freqs, list) and len(freqs) == len(names)
            and all(isinstance(f, (int, float)) and 0 <= f <= 1 for f in freqs)):
        raise ValueError(f"{kind} spec condition {cond!r}: expected {{'attributes': [names], "
                         "'frequencies': [one in [0, 1] per name]}")
    return names, [float(f) for f in freqs]


def _bind(cls: type, kind: str, arch: str, kwargs: dict) -> inspect.BoundArguments:
    """The constructor's arguments, or one line naming the kwarg it does not take."""
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name in kwargs:
        if name not in params and not takes_any:
            raise ValueError(f"{kind} of arch {arch}: unexpected kwarg {name!r} (it takes: {', '.join(params)})")
    try:
        bound = inspect.signature(cls).bind(**kwargs)
    except TypeError as e:  # a required argument missing
        raise ValueError(f"{kind} of arch {arch}: {e}") from None
    bound.apply_defaults()
    hints = typing.get_type_hints(cls.__init__)
    for name, value in kwargs.items():
        check_value(name, value, hints.get(name), f"{kind} of arch {arch}: ")
    return bound


def _check_size(cls: type, kind: str, arch: str, kwargs: dict) -> None:
    """Build the network on the meta device (no memory) and refuse it in one line when it cannot
    be built or would hold more than MAX_PARAMETERS."""
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in cls(**kwargs).parameters())
    except Exception as e:  # noqa: BLE001 - an arch's own checks and torch's, for values no annotation rules out
        raise ValueError(f"{kind} of arch {arch}: {kwargs} cannot be built ({describe_error(e, 200)})") from None
    if count > MAX_PARAMETERS:
        raise ValueError(f"{kind} of arch {arch}: {kwargs} would hold {count:.3g} parameters "
                         f"({count * 4 / 2**30:.0f} GiB in float32), over facegan's limit of {MAX_PARAMETERS:.3g}")


def build(kind: str, spec: dict) -> nn.Module:
    """The `kind` ("generator" or "discriminator") network a spec describes, with `.spec` set to
    a copy of it (what exports store). Bad specs give one-line ValueErrors naming the fault."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not (isinstance(spec, dict) and isinstance(spec.get("arch"), str) and isinstance(spec.get("kwargs"), dict)):
        raise ValueError(f"{kind} spec {spec!r}: expected {{'arch': name, 'kwargs': {{...}}}}")
    arch, kwargs = spec["arch"], spec["kwargs"]
    cls = getattr(arch_module(arch), KINDS[kind], None)
    if cls is None:
        raise ValueError(f"arch {arch!r}: {ARCHS[arch]} defines no {KINDS[kind]}")
    interface = {"generator": GeneratorNet, "discriminator": DiscriminatorNet}[kind]
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise ValueError(f"arch {arch!r}: {ARCHS[arch]}.{KINDS[kind]} must subclass facegan.networks."
                         f"{interface.__name__} (the one way to call a {kind}: "
                         f"{'G(z, c)' if kind == 'generator' else 'D(x, c)'})")
    arguments = _bind(cls, kind, arch, kwargs).arguments
    if arguments.get("resolution") not in RESOLUTIONS:
        raise ValueError(f"{kind} of arch {arch}: resolution {arguments.get('resolution')} is not supported; "
                         f"choose one of {RESOLUTIONS}")
    condition = _condition(kind, spec)
    if condition is not None and kind == "generator":  # the arch's G takes the attributes as K more inputs
        kwargs = {**kwargs, "z_dim": arguments["z_dim"] + len(condition[0])}
    _check_size(cls, kind, arch, kwargs)
    module = cls(**kwargs)
    if condition is not None and kind == "generator":
        module = conditional.ConditionalGenerator(module, *condition)
    elif condition is not None:
        module = conditional.ProjectionDiscriminator(module, condition[0])
    module.spec = copy.deepcopy(spec)
    return module


