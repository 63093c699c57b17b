"""Network architectures as components, pure modules (no devices, precision, distribution or
files): the registry (registry.py) builds G and D of any registered arch from a spec; common.py
holds what the archs share; exports.py exports and loads networks; sampling.py is everything about
drawing images from a generator.

This face re-exports the registry's and common.py's names (`networks.build(...)`,
`networks.ARCHS`); both import only torch.
"""

from facegan.networks.common import (
    RESOLUTIONS,
    DiscriminatorNet,
    GeneratorNet,
    attributes,
    has_batchnorm,
    no_attributes,
    stage_widths,
    to_channels_last,
)
from facegan.networks.registry import (
    ARCHS,
    KINDS,
    arch_module,
    arch_options,
    build,
    check_options,
    make_specs,
    option_fields,
)

__all__ = ["ARCHS", "KINDS", "RESOLUTIONS", "DiscriminatorNet", "GeneratorNet", "arch_module", "arch_options",
           "attributes", "build", "check_options", "has_batchnorm", "make_specs", "no_attributes", "option_fields",
           "stage_widths", "to_channels_last"]
