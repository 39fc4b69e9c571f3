"""`python -m plip_jax.main` with a fault injected right after a checkpoint, for kill-and-resume runs:

    python tests/scripts/main_with_fault.py --crash-after-checkpoint=N [plip_jax.main flags ...]
    python tests/scripts/main_with_fault.py --hold-after-checkpoint=N [plip_jax.main flags ...]

Once checkpoint N is written (the save finished), `crash` ends the process at once with exit code 3
and no clean-up (os._exit, as a lost machine would), and `hold` prints
`PLIP_HOLD: checkpoint N written; waiting to be killed` and sleeps until the caller's SIGKILL. The
fault is this process's patch of `Checkpointer.save`; the engine itself has no test switches.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from plip_jax.core.checkpoint import Checkpointer

FAULTS = ("--crash-after-checkpoint", "--hold-after-checkpoint")


def install(fault: str, fault_step: int) -> None:
    """Patch Checkpointer.save so that the save of `fault_step` is followed by the fault."""
    save = Checkpointer.save

    def save_then_fault(self, step, *args, **kwargs):
        out = save(self, step, *args, **kwargs)
        if int(step) == fault_step:
            self.wait()  # the checkpoint is complete on disk before the fault
            if fault == "--crash-after-checkpoint":
                os._exit(3)
            print(f"PLIP_HOLD: checkpoint {step} written; waiting to be killed", flush=True)
            while True:
                time.sleep(60)
        return out

    Checkpointer.save = save_then_fault


def main(argv: list[str]) -> int:
    faults = [a for a in argv if a.partition("=")[0] in FAULTS]
    if len(faults) != 1 or not faults[0].partition("=")[2].isdigit():
        print(f"usage: {Path(__file__).name} {{{'|'.join(FAULTS)}}}=N [plip_jax.main flags ...]", file=sys.stderr)
        return 2
    name, _, step = faults[0].partition("=")
    install(name, int(step))
    from plip_jax.main import run

    return run([a for a in argv if a != faults[0]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
