"""Process-group setup through Accelerate, and the guard against silently single-process launches.

The trap this module exists for: on a CPU node `accelerate launch --cpu --num_processes 2` (and a
MULTI_CPU YAML without mpirun) starts ONE plain process, and training quietly runs 1/N of the intended
job. What really starts N gloo processes on CPU is Accelerate's torchrun path: `accelerate launch
--multi_gpu --num_processes N` or `accelerate_configs/cpu_multiprocess.yaml`. In those processes
Accelerate only picks gloo when told to use the CPU, which `make_accelerator` does whenever CUDA is absent.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

from glyph_train.errors import GlyphTrainError


def make_accelerator(mixed_precision: str, grad_accum: int, out_dir: str, log_with: str | None) -> Accelerator:
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed_precision,
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
    """`--num_processes` (or its config file's value) of the parent `accelerate launch`, read with
    Accelerate's own argument parser so the training script's flags are never mistaken for its own."""
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
    if launch_args.num_processes:
        return int(launch_args.num_processes)
    config_file = launch_args.config_file or default_config_file
    return _processes_in_config(Path(config_file))


def _processes_in_config(path: Path) -> int | None:
    import yaml

    try:
        return int(yaml.safe_load(path.read_text()).get("num_processes", 1))
    except (OSError, ValueError, AttributeError, TypeError):
        return None


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
