"""Compile seconds spent by JAX in this process (tracing, lowering, XLA compile), from jax.monitoring
events: the loop logs them per step window beside the wall time, so a run's own metrics say how
long its first step compiled (bench/rehearsal.py reads them)."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import jax

# Durations JAX records for every jit compile (a persistent-cache hit skips the backend one).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileClock:
    """Running total of compile seconds since creation; `close()` stops listening."""

    def __init__(self) -> None:
        self.total = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_: object) -> None:
        if event in COMPILE_EVENTS:
            self.total += float(duration)

    def close(self) -> None:
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is not None:
            try:
                unregister(self._on_event)
            except (AssertionError, ValueError):  # already removed
                pass


class StepWindow:
    """Wall and compile seconds of the steps since the last `read()`, less the spans run under
    `exclude()` (evaluation, checkpoint saves), so `step_s` is the training step alone."""

    def __init__(self, clock: CompileClock) -> None:
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self.t0, self.c0 = time.perf_counter(), self.clock.total
        self.steps, self.skip_t, self.skip_c = 0, 0.0, 0.0

    def step(self) -> None:
        self.steps += 1

    @contextlib.contextmanager
    def exclude(self) -> Iterator[None]:
        t, c = time.perf_counter(), self.clock.total
        try:
            yield
        finally:
            self.skip_t += time.perf_counter() - t
            self.skip_c += self.clock.total - c

    def read(self) -> dict[str, float]:
        """{'step_s': wall per step, 'compile_s': compile seconds in the window}; starts a new window."""
        wall = max(time.perf_counter() - self.t0 - self.skip_t, 1e-9)
        out = {"step_s": wall / max(self.steps, 1), "compile_s": self.clock.total - self.c0 - self.skip_c}
        self._reset()
        return out
