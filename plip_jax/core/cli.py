"""How every command line ends on a known fault: one line on stderr and exit code 2, no traceback.

`run_cli(main)` wraps an entry point. Known faults are the project's errors (ConfigError,
NonFiniteLoss, CheckpointError, DatasetError, ... — passed in `known`), every ValueError and
OSError, and XLA running out of memory (said with the batch size and the flag to lower). Anything
else is a bug and keeps its traceback; `--debug` (anywhere on the command line) or PLIP_DEBUG=1
shows the traceback of known faults too.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
import threading
from typing import Callable, Sequence

EXIT_FAULT = 2


def debug_enabled(argv: Sequence[str] = ()) -> bool:
    return "--debug" in argv or os.environ.get("PLIP_DEBUG", "") not in ("", "0")


def is_out_of_memory(e: BaseException) -> bool:
    """XLA's RESOURCE_EXHAUSTED at compile or run time (XlaRuntimeError / jax.errors.JaxRuntimeError)."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"XlaRuntimeError", "JaxRuntimeError"}) and "RESOURCE_EXHAUSTED" in str(e)


def human_bytes(n: float) -> str:
    """'512 bytes', '3.2 GiB': a byte count for a one-line message (binary units)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def oom_message(e: BaseException, batch_size: int | None = None, batch_key: str = "config.data.batch_size") -> str:
    """One line: what ran out, at which batch size, and which flags to lower."""
    text = " ".join(str(e).split())
    m = re.search(r"allocat\w*\s+([\d.]+)\s*(bytes|[KMGT]?i?B)\b", text, re.IGNORECASE)
    if m:
        size = human_bytes(float(m.group(1))) if m.group(2).lower() == "bytes" else f"{m.group(1)} {m.group(2)}"
        what = f"XLA could not allocate {size}"
    else:
        what = "XLA: RESOURCE_EXHAUSTED"
    where = f" at {batch_key}={batch_size}" if batch_size is not None else ""
    return (f"out of device memory ({what}){where}; lower --{batch_key} (and raise "
            f"--config.optim.grad_accum_steps to keep the effective batch)")




def one_line(e: BaseException) -> str:
    """The message of a known fault on one line."""
    if isinstance(e, OSError) and e.strerror:
        where = e.filename if e.filename is not None else ""
        msg = f"{where}: {e.strerror}" if where else f"[Errno {e.errno}] {e.strerror}"
    else:
        msg = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "") or type(e).__name__
    return msg


def quiet_shutdown() -> None:
    """Silence what Orbax/asyncio/absl print while a failing process shuts down (threads that find
    their event loop closed, 'Task was destroyed', ERROR records of background writers)."""
    for name in ("absl", "asyncio", "orbax", "jax", "tensorflow"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    threading.excepthook = lambda args: None
    sys.unraisablehook = lambda unraisable: None


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, *,
            known: tuple[type[BaseException], ...] = (), batch_size: Callable[[], tuple[str, int] | None] | None = None) -> int:
    """Call `main(argv)` and return its exit code; a known fault becomes `error: <one line>` on stderr
    and EXIT_FAULT. `batch_size()` gives (config key, value) for the out-of-memory line."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(args)
    if debug:
        os.environ["PLIP_DEBUG"] = "1"  # for a CLI's own one-line handlers (reraise_if_debug)
    args = [a for a in args if a != "--debug"]
    try:
        rc = main(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    except BaseException as e:  # noqa: BLE001 - classified below; unknown ones re-raised
        if debug or debug_enabled():
            raise
        if is_out_of_memory(e):
            key_value = batch_size() if batch_size else None
            line = oom_message(e, key_value[1], key_value[0]) if key_value else oom_message(e)
        elif isinstance(e, MemoryError):
            line = "out of host memory (MemoryError); lower the batch size"
        elif isinstance(e, (ValueError, OSError, *known)):
            line = one_line(e)
        else:
            raise
        quiet_shutdown()
        print(f"error: {line}", file=sys.stderr, flush=True)
        return EXIT_FAULT
    return int(rc or 0)


def fail(msg: str) -> None:
    """End a command now: `error: msg` on stderr, exit 2."""
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_FAULT)


def quiet_library_loggers() -> None:
    """absl INFO records and JAX's backend-probe INFO lines ("Unable to initialize backend 'tpu'")
    never come before a command's own answer."""
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


class UsageError(ValueError):
    """A mistake on the command line (flag, config key, config value or argument); one line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the commands: a mistake is a UsageError (run_cli prints one `error:` line,
    exit 2) instead of argparse's usage block; an unknown option names the closest known one."""

    def error(self, message: str):  # type: ignore[override]
        m = re.match(r"unrecognized arguments: (.*)", message)
        if m:
            options = _options(self)
            hints = []
            for arg in m.group(1).split():
                close = difflib.get_close_matches(arg.split("=")[0], options, n=1) if arg.startswith("-") else []
                hints.extend(f"did you mean {c}?" for c in close)
            message = f"{self.prog}: {message}" + (f"; {' '.join(hints)}" if hints else "")
        else:
            message = f"{self.prog}: {message}"
        raise UsageError(message)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of a parser and of its sub-commands."""
    out = []
    for action in parser._actions:  # argparse keeps its actions only here
        out.extend(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.extend(_options(sub))
    return sorted(set(out))


def _flag_error_line(e: BaseException, argv: Sequence[str]) -> str:
    """absl / ml_collections parse errors as one line, the suggestion kept."""
    text = str(e)
    missing = re.search(r"\[Errno \d+\] ([^:\n]+): '([^']+)'", text)
    if missing and "config file" in text:
        return f"config file {missing.group(2)}: {missing.group(1)}"
    if "Error whilst parsing config file" in text or "Traceback" in text:
        # A config file's get_config raised: its own last line says what was wrong.
        head = re.match(r"flag (--\S+?): Error whilst", text)
        last = [ln.strip() for ln in text.splitlines() if ln.strip()][-1]
        last = re.sub(r"^[A-Za-z_.]*(Error|Exception): ", "", last)
        return f"{head.group(1)}: {last}" if head else last
    if isinstance(e, (AttributeError, KeyError)):
        # ml_collections: AttributeError('\'lrr\'\nDid you mean "lr" instead of "lrr"?')
        hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
        key = re.search(r"([A-Za-z_]\w*)", text.replace("\\'", " "))
        name = hint.group(2) if hint else (key.group(1) if key else text)
        arg = next((a for a in argv if re.search(rf"\.{re.escape(name)}(=|$)", a)), None)
        where = f" ({arg})" if arg else ""
        return (f"unknown config key {name!r}{where}" + (f"; did you mean {hint.group(1)!r}?" if hint else ""))
    line = " ".join(text.split())
    return line[0].lower() + line[1:] if line else type(e).__name__


def parse_absl_flags(argv: Sequence[str]) -> list[str]:
    """Parse absl flags (config files and overrides included) for a command; any mistake is a
    UsageError with one line (unknown flag or key with its suggestion, a wrong type, a bad config
    argument), never absl's 'FATAL Flags parsing error' with a traceback."""
    from absl import flags

    args = list(argv)
    try:
        return flags.FLAGS(args)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        raise UsageError(_flag_error_line(e, args)) from None


def config_value(holder) -> object:
    """The parsed config of an ml_collections config flag; a config file that failed to load
    (missing, or raising) is a UsageError with one line."""
    try:
        value = holder.value
        if value is not None:
            getattr(value, "keys")  # a file that failed to load raises on first use
        return value
    except (OSError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(_flag_error_line(e, [])) from None


def reraise_if_debug() -> None:
    """Call first in a CLI's own one-line `except` block: under --debug / PLIP_DEBUG=1 the handled
    exception propagates with its traceback instead."""
    if debug_enabled():
        raise  # noqa: PLE0704 - re-raises the exception being handled by the caller


def add_debug_flag(parser) -> None:
    """List `--debug` in an argparse CLI's help (run_cli strips it before parsing)."""
    parser.add_argument("--debug", action="store_true", help="show the traceback of known faults (also PLIP_DEBUG=1)")
