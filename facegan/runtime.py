"""Process setup shared by training, evaluation and the benches: device, precision, Accelerator."""

from __future__ import annotations

import functools
import os

import accelerate.optimizer
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

# Accelerate's optimizer wrapper asks importlib whether the `lomo` package exists at every
# optimizer.step(): a filesystem search over sys.path, twice per GAN step (measured 4% of a small
# CPU step). The answer cannot change while the process runs, so it is asked once.
accelerate.optimizer.is_lomo_available = functools.cache(accelerate.optimizer.is_lomo_available)


def use_cpu(asked: bool) -> bool:
    """Accelerate sets up multi-process CPU (gloo) only when told cpu=True: do so when asked, and
    under torchrun or accelerate launch on a machine without CUDA."""
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return asked or (multi_process and not torch.cuda.is_available())


def resolve_precision(mixed_precision: str, cpu: bool) -> tuple[str, str]:
    """(precision, where it came from). 'auto': the launcher's bf16 or fp16, else bf16 on a GPU
    that has it, else no. A launcher's 'no' is not taken: plain `accelerate launch` exports
    ACCELERATE_MIXED_PRECISION=no when nobody asked for anything, so it says nothing; fp32 on a
    GPU is `--mixed-precision no`."""
    if mixed_precision != "auto":
        return mixed_precision, "--mixed-precision"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher in ("bf16", "fp16"):
        return launcher, f"launcher: ACCELERATE_MIXED_PRECISION={launcher}"
    if not torch.cuda.is_available() or cpu:
        return "no", "auto: CPU"
    if torch.cuda.is_bf16_supported():
        return "bf16", "auto: GPU with bf16"
    return "no", "auto: GPU without bf16"


def make_accelerator(*, cpu: bool, mixed_precision: str, deterministic: bool, trackers: tuple[str, ...] = (),
                     project_dir: str | None = None, logging_dir: str | None = None) -> Accelerator:
    """The Accelerator of a run: `trackers` log into `logging_dir` (TensorBoard's event files)."""
    # On a GPU some cuDNN kernels (convolution backward) sum in a varying order, so two runs, or a
    # run and its resume, drift apart in the last bits. Deterministic kernels make resume bitwise
    # exact there too; on CPU every kernel is deterministic already.
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False
    project = ProjectConfiguration(project_dir=project_dir, logging_dir=logging_dir) if project_dir else None
    return Accelerator(cpu=use_cpu(cpu), mixed_precision=resolve_precision(mixed_precision, cpu)[0],
                       log_with=list(trackers) or None, project_config=project, step_scheduler_with_optimizer=False)


def process_warnings(acc: Accelerator) -> list[str]:
    """Launches that run other than asked: more processes on this node than devices, or
    `accelerate launch --cpu --num_processes N`, which starts one process (Accelerate's own
    behaviour; it still sets up a rendezvous address for N)."""
    warnings = []
    local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
    gpu = acc.device.type == "cuda"
    devices = torch.cuda.device_count() if gpu else (os.cpu_count() or 1)
    if local > devices:
        what = "GPU(s)" if gpu else "CPU core(s)"
        warnings.append(f"warning: {local} processes on this node but {devices} {what}; pass --num_processes "
                        f"{devices} or fewer to accelerate launch (a config file's num_processes is taken as is)")
    launched_by_accelerate = "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ
    if acc.num_processes == 1 and launched_by_accelerate and "WORLD_SIZE" not in os.environ:
        warnings.append("warning: accelerate launch was asked for several processes but started 1 (its --cpu "
                        "launcher does that); use accelerate launch --multi_gpu --num_processes N, which runs "
                        "gloo DDP on a CPU too, or launch/cpu_ddp.sh")
    return warnings
