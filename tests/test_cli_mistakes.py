"""Every command's command-line mistakes end in one `error:` line, exit 2, no traceback: unknown
config key (with the suggestion), wrong value type, unknown config argument, unknown flag (with
the suggestion), missing required flag, missing config file."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, subprocess_env

ABSL_COMMANDS = {
    "plip_jax.main": ["--config", "configs/pretrain.py:mini", "--workdir", "/tmp/plip-cli-mistakes"],
    "plip_jax.aot": ["--config", "configs/pretrain.py", "--topology", "v5e-4"],
}
ABSL_MISTAKES = {
    "unknown config key": (["--config.optim.lrr=1"], ["unknown config key 'lrr'", "did you mean 'lr'?"]),
    "wrong type": (["--config.optim.lr=abc"], ["--config.optim.lr=abc", "could not convert string to float"]),
}
FLAG_TYPOS = {"plip_jax.main": ("--wrkdir=x", "wrkdir", "workdir"), "plip_jax.aot": ("--topolgy=v5e-4", "topolgy", "topology")}


def _run(module: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.mark.slow  # a fresh process each (JAX import); the argparse cases below run in-process
@pytest.mark.parametrize("module", sorted(ABSL_COMMANDS))
@pytest.mark.parametrize("mistake", sorted(ABSL_MISTAKES))
def test_absl_command_mistakes_are_one_line(module, mistake):
    extra, expected = ABSL_MISTAKES[mistake]
    line = _one_error_line(_run(module, ABSL_COMMANDS[module] + extra))
    for text in expected:
        assert text in line, line


@pytest.mark.parametrize("module", sorted(ABSL_COMMANDS))
def test_absl_unknown_flag_names_the_closest(module):
    arg, typo, known = FLAG_TYPOS[module]
    line = _one_error_line(_run(module, ABSL_COMMANDS[module] + [arg]))
    assert f"unknown command line flag '{typo}'" in line and f"Did you mean: {known}" in line


@pytest.mark.parametrize("module", sorted(ABSL_COMMANDS))
def test_unknown_config_argument_and_missing_file_are_one_line(module):
    args = [a.replace("configs/pretrain.py:mini", "configs/pretrain.py").replace("configs/pretrain.py",
                                                                                 "configs/pretrain.py:minii")
            for a in ABSL_COMMANDS[module]]
    line = _one_error_line(_run(module, args))
    assert "unknown config argument 'minii'" in line and "known: [" in line
    args = [a if not a.startswith("configs/") else "configs/nope.py" for a in ABSL_COMMANDS[module]]
    assert _one_error_line(_run(module, args)) == "error: config file configs/nope.py: No such file or directory"


@pytest.mark.parametrize("module,required", [("plip_jax.main", "--workdir"), ("plip_jax.aot", "--topology")])
def test_missing_required_flag_is_one_line(module, required):
    args = list(ABSL_COMMANDS[module])
    i = args.index(required)
    del args[i:i + 2]
    assert required in _one_error_line(_run(module, args))


ARGPARSE_COMMANDS = {
    # module: (valid-looking arguments, an option to misspell, an int option, the required flags)
    "plip_jax.search": (["--checkpoint", "ck", "--images", ".", "--query", "a man"], "--images", "--top-k",
                        "--checkpoint"),
    "plip_jax.report": (["--workdir", "w"], "--workdir", None, "--workdir"),
    "plip_jax.convert": (["to-torch", "--checkpoint", "ck", "--out", "o.pth.tar"], "--checkpoint", None, "--out"),
    "tfds_synth_pedes.build": (["synth_pedes", "--data_dir", "d"], "--data_dir", None, None),
}


def _cli(module: str):
    import importlib

    if module == "plip_jax.convert":
        return importlib.import_module("plip_jax.convert.__main__").main
    if module == "tfds_synth_pedes.build":
        return importlib.import_module("tfds_synth_pedes.build").main
    return importlib.import_module(module.replace("plip_jax.", "plip_jax.tools.")).cli


def _in_process(module: str, args: list[str], capsys) -> str:
    from plip_jax.core.cli import run_cli

    fn = _cli(module)
    rc = run_cli(fn, args) if module in ("plip_jax.convert", "tfds_synth_pedes.build") else fn(args)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("module", sorted(ARGPARSE_COMMANDS))
def test_argparse_unknown_flag_names_the_closest(module, capsys):
    args, option, _, _ = ARGPARSE_COMMANDS[module]
    typo = option[:-1] + option[-1] * 2  # --images -> --imagess
    line = _in_process(module, args + [typo, "x"], capsys)
    assert "unrecognized arguments" in line and f"did you mean {option}?" in line


@pytest.mark.parametrize("module", [m for m, v in sorted(ARGPARSE_COMMANDS.items()) if v[3]])
def test_argparse_missing_required_flag(module, capsys):
    args, _, _, required = ARGPARSE_COMMANDS[module]
    i = args.index(required)
    line = _in_process(module, args[:i] + args[i + 2:], capsys)
    assert "required" in line and required in line


def test_argparse_wrong_type(capsys):
    args, _, int_option, _ = ARGPARSE_COMMANDS["plip_jax.search"]
    line = _in_process("plip_jax.search", args + [int_option, "many"], capsys)
    assert "invalid int value: 'many'" in line and int_option in line
