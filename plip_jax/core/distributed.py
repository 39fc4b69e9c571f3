"""Multi-process start-up: jax.distributed.initialize() only when the run really is multi-process
(TPU VM slice, SLURM/multi-node GPU, or explicit flags); a single process never calls it."""
from __future__ import annotations

import os

import jax


def _env_says_multiprocess() -> bool:
    if os.environ.get("PLIP_COORDINATOR"):
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    # Cloud TPU VM slices: jax finds the cluster itself; worker count comes from the metadata env.
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, cpu_collectives: bool = False) -> bool:
    """Initialise jax.distributed when asked to or when the environment is multi-process.

    Explicit arguments (or PLIP_COORDINATOR / PLIP_NUM_PROCESSES / PLIP_PROCESS_ID) win; otherwise
    jax's cluster auto-detection (TPU, SLURM, ...) is used. Returns True if initialised.
    """
    coordinator = coordinator or os.environ.get("PLIP_COORDINATOR") or None
    if num_processes is None and os.environ.get("PLIP_NUM_PROCESSES"):
        num_processes = int(os.environ["PLIP_NUM_PROCESSES"])
    if process_id is None and os.environ.get("PLIP_PROCESS_ID"):
        process_id = int(os.environ["PLIP_PROCESS_ID"])
    if coordinator is None and not _env_says_multiprocess():
        return False
    if cpu_collectives or os.environ.get("PLIP_CPU_COLLECTIVES") == "gloo":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is not None:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    return True
