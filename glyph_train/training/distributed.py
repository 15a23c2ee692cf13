"""Process-group setup through Accelerate, and the guard against silently single-process launches.

The trap this module exists for: on a CPU node `accelerate launch --cpu --num_processes 2` (and a
MULTI_CPU YAML without mpirun) starts ONE plain process, and training quietly runs 1/N of the intended
job. What really starts N gloo processes on CPU is Accelerate's torchrun path: `accelerate launch
--multi_gpu --num_processes N` or `accelerate_configs/cpu_multiprocess.yaml`. In those processes
Accelerate only picks gloo when told to use the CPU, which `make_accelerator` does whenever CUDA is absent.

It also resolves `--mixed-precision auto`, which needs the same reading of the parent `accelerate launch`.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

from glyph_train.errors import GlyphTrainError


def make_accelerator(mixed_precision: str, grad_accum: int, out_dir: str, log_with: str | None,
                     compile: bool = False) -> Accelerator:
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed_precision,
        dynamo_backend="inductor" if compile else None,  # None: the launch config's dynamo_backend, if any
        gradient_accumulation_steps=grad_accum,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=out_dir, logging_dir=out_dir),
        # seedable sampler: shuffling is a function of (seed, epoch), so resume and N processes agree
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def requested_processes(explicit: int = 0) -> int | None:
    """How many processes the launch asked for: --num-processes, else what the parent `accelerate launch` was given."""
    if explicit:
        return explicit
    if os.environ.get("GLYPH_TRAIN_NUM_PROCESSES"):  # set by launch/cpu_single_node.sh and the SLURM script
        return int(os.environ["GLYPH_TRAIN_NUM_PROCESSES"])
    return _from_parent_accelerate_launch()


def _from_parent_accelerate_launch() -> int | None:
    """`--num_processes` (or its config file's value) of the parent `accelerate launch`."""
    launch = _parent_accelerate_launch()
    if launch is None:
        return None
    launch_args, config_file = launch
    if launch_args.num_processes:
        return int(launch_args.num_processes)
    return _processes_in_config(config_file)


def _parent_accelerate_launch():
    """(parsed arguments, config file) of the parent `accelerate launch`, or None when there is none. Read
    with Accelerate's own argument parser so the training script's flags are never mistaken for its own."""
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return None
    # `accelerate launch ...` (console script) or `python -m accelerate.commands.launch ...`
    starts = [i for i, a in enumerate(argv[:4]) if a == "launch" or a.endswith("accelerate.commands.launch")]
    if not starts or "accelerate" not in " ".join(argv[:starts[0] + 1]):
        return None
    from accelerate.commands.config import default_config_file
    from accelerate.commands.launch import launch_command_parser

    try:
        launch_args = launch_command_parser().parse_args(argv[starts[0] + 1:])
    except SystemExit:
        return None
    return launch_args, Path(launch_args.config_file or default_config_file)


def _processes_in_config(path: Path) -> int | None:
    try:
        return int(_read_config(path).get("num_processes", 1))
    except (ValueError, AttributeError, TypeError):
        return None


def _read_config(path: Path) -> dict | None:
    """An `accelerate launch` config file's settings; None when it is absent or unreadable."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


# ------------------------------------------------------------------------------------- mixed precision


def resolve_mixed_precision(requested: str) -> tuple[str, str]:
    """(precision to train in, why) for `--mixed-precision`: an explicit value wins; `auto` takes what the
    launch configuration says, else bf16 where the hardware has native bf16, else "no" (fp32).

    Only an explicit setting of the launch counts: `accelerate launch` exports ACCELERATE_MIXED_PRECISION=no
    also when neither its flags nor its config file mention precision, so the parent's own arguments and
    config file are read to tell the two apart.
    """
    if requested != "auto":
        return requested, "--mixed-precision"
    stated = launch_mixed_precision()
    if stated is not None:
        return stated
    native, reason = native_bf16()
    return ("bf16" if native else "no"), f"auto: {reason}"


def launch_mixed_precision() -> tuple[str, str] | None:
    """(precision, where it was set) when the launch states one explicitly, else None."""
    launch = _parent_accelerate_launch()
    if launch is None:  # torchrun, srun or a plain process: the variable is set only on purpose
        value = os.environ.get("ACCELERATE_MIXED_PRECISION")
        return (value.lower(), "ACCELERATE_MIXED_PRECISION") if value else None
    launch_args, config_file = launch
    if launch_args.mixed_precision:
        return launch_args.mixed_precision.lower(), "accelerate launch --mixed_precision"
    config = _read_config(config_file)
    if not isinstance(config, dict):
        return None
    value = config.get("mixed_precision")
    if value is False:  # YAML reads an unquoted `no` as false
        value = "no"
    if value is None and config.get("fp16"):  # the legacy key Accelerate still honours
        value = "fp16"
    return (str(value).lower(), f"launch config {config_file}") if value is not None else None


def native_bf16() -> tuple[bool, str]:
    """Whether this machine computes bf16 natively (the device training runs on), and why."""
    if torch.cuda.is_available():
        name, (major, minor) = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
        if major >= 8:
            return True, f"{name} has native bf16 (compute capability {major}.{minor})"
        return False, f"{name} has compute capability {major}.{minor} < 8.0, no native bf16"
    try:
        flags = cpu_bf16_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False, "no /proc/cpuinfo to show that this CPU has native bf16"
    if flags:
        return True, f"the CPU has native bf16 ({', '.join(flags)})"
    return False, f"the CPU has no native bf16 (neither {' nor '.join(CPU_BF16_FLAGS)})"


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # without them, CPU bf16 autocast is slower than fp32


def cpu_bf16_flags(cpuinfo: str) -> list[str]:
    """The native-bf16 flags in /proc/cpuinfo's `flags` line (x86)."""
    have = cpu_flags(cpuinfo)
    return [f for f in CPU_BF16_FLAGS if f in have]


def cpu_flags(cpuinfo: str) -> set[str]:
    """The first `flags` line of /proc/cpuinfo's text (x86), as a set; empty if there is none."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def check_world_size(accelerator: Accelerator, explicit: int = 0) -> None:
    """Refuse to train when the launch asked for N processes but this process sees fewer."""
    wanted = requested_processes(explicit)
    seen = accelerator.num_processes
    if wanted and wanted != seen:
        launch = shlex.join(["accelerate", "launch", "--config_file", "accelerate_configs/cpu_multiprocess.yaml"])
        raise GlyphTrainError(
            f"the launch asked for {wanted} processes but this run sees {seen} "
            f"({accelerator.distributed_type.value}); on CPU use `{launch}` or `accelerate launch --multi_gpu "
            f"--num_processes {wanted}` (README: Launching)")


def check_same_flags(accelerator: Accelerator, config: dict) -> None:
    """Refuse to train when processes were started with different flags (e.g. nodes launched with different
    commands): DDP would quietly average the gradients of differently configured runs."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import gather_object

    configs = gather_object([config])
    for rank, other in enumerate(configs[1:], start=1):
        differ = [f"{k} = {other.get(k)!r} vs {v!r}" for k, v in configs[0].items() if other.get(k) != v]
        if differ:
            raise GlyphTrainError(f"process {rank} was started with other flags than process 0 "
                                  f"({'; '.join(differ)}); start every node with the same trainer flags")
