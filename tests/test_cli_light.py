"""The command line answers at once: `import forgetless.cli`, `forgetless --help` and every command's
--help leave torch, transformers, peft and matplotlib unimported (issue 23 §2). Each check runs in
a fresh interpreter, since this one has torch loaded by the suite's conftest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from forgetless.cli import COMMANDS, app, load_commands
from forgetless.models.names import PRESET_NAMES
from forgetless.optim.names import OPTIMIZER_NAMES

HEAVY = ("torch", "transformers", "peft", "matplotlib")


def _loaded_after(code: str) -> dict:
    """Run `code` in a fresh interpreter; the heavy modules it left in sys.modules, and what it
    stored in `result`."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json as _json, sys as _sys
        print(_json.dumps({{"heavy": [m for m in {HEAVY!r} if m in _sys.modules],
                            "result": globals().get("result")}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _run_cli(argv: list[str]) -> str:
    """`forgetless ARGV` through the console entry point (forgetless.cli.main), exit code kept."""
    return f"""
        import contextlib, io, sys
        import forgetless.cli
        sys.argv = ["forgetless", *{argv!r}]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                forgetless.cli.main()
            except SystemExit as stop:
                result = [stop.code, out.getvalue()]
    """


def test_importing_the_cli_loads_no_heavy_module():
    assert _loaded_after("import forgetless.cli")["heavy"] == []


def test_importing_a_box_or_the_configs_loads_no_heavy_module():
    got = _loaded_after("""
        import forgetless.optim, forgetless.data, forgetless.models, forgetless.train, forgetless.sweep
        import forgetless.analysis, forgetless.report, forgetless.recommend, forgetless.integrations
        from forgetless.train import FinetuneConfig, PretrainConfig
        cfg = PretrainConfig(model="nano", optimizer="muon", out_dir="x")
        result = [cfg.model, cfg.optimizer, sorted(forgetless.models.__all__)[:2]]
    """)
    assert got["result"] == ["nano", "muon", ["PRESETS", "apply_lora"]]
    assert got["heavy"] == []


@pytest.mark.parametrize("argv", [["--help"], ["finetune", "--help"], ["pretrain", "--help"],
                                  ["sweep", "--help"]])
def test_help_pages_load_no_heavy_module(argv):
    got = _loaded_after(_run_cli(argv))
    code, text = got["result"]
    assert code == 0 and "Usage: forgetless" in text
    assert got["heavy"] == []
    if argv == ["finetune", "--help"]:  # the options come from FinetuneConfig: the names it validates
        assert "--lora-rank" in text and "--optimizer" in text


def test_every_commands_help_loads_no_heavy_module():
    names = [*COMMANDS, "data prepare", "data tasks"]
    got = _loaded_after(f"""
        from typer.testing import CliRunner
        from forgetless.cli import app
        result = [(name, CliRunner().invoke(app, [*name.split(), "--help"]).exit_code) for name in {names!r}]
    """)
    assert got["result"] == [[name, 0] for name in names]
    assert got["heavy"] == []


def test_optimizers_lists_the_registry_with_torch_only():
    got = _loaded_after(_run_cli(["optimizers", "--json"]))
    code, text = got["result"]
    assert code == 0
    # the registry's rules are torch functions; nothing heavier is needed to list them
    assert [d["name"] for d in json.loads(text)] == list(OPTIMIZER_NAMES.fixed)
    assert got["heavy"] == ["torch"]


def test_name_tables_equal_the_registries():
    from forgetless.models.presets import PRESETS
    from forgetless.optim.registry import OPTIMIZERS

    assert OPTIMIZER_NAMES.fixed == tuple(OPTIMIZERS)
    assert PRESET_NAMES.fixed == tuple(PRESETS)


def test_a_rule_registered_at_run_time_is_a_valid_setting():
    import torch

    from forgetless.optim import register, unregister
    from forgetless.train import PretrainConfig

    register("lighttestsign", "1", "inf", torch.sign, element_wise=True)
    try:
        assert "lighttestsign" in OPTIMIZER_NAMES and "lighttestsign" not in OPTIMIZER_NAMES.fixed
        assert PretrainConfig(optimizer="lighttestsign", out_dir="x").optimizer == "lighttestsign"
    finally:
        unregister("lighttestsign")
    assert "lighttestsign" not in OPTIMIZER_NAMES
    with pytest.raises(ValueError, match="lighttestsign"):
        PretrainConfig(optimizer="lighttestsign", out_dir="x")


def test_the_command_table_matches_what_the_modules_register():
    """COMMANDS is what `forgetless --help` lists without importing anything: each entry's module
    registers that command, no module registers a command the table lacks, and the help line is
    the first paragraph of the command's own help."""
    registered: dict[str, object] = {}
    for module in dict.fromkeys(m for m, _ in COMMANDS.values()):
        commands = load_commands(module)
        registered.update(commands)
        for name in commands:
            assert name in COMMANDS, f"{module} registers {name!r}: add it to forgetless.cli.COMMANDS"
    for name, (module, short_help) in COMMANDS.items():
        assert name in load_commands(module), f"{module} does not register {name!r}"
        first = " ".join(registered[name].help.split("\n\n")[0].split())
        assert short_help == first, f"COMMANDS[{name!r}]: copy the help line {first!r}"


def test_a_mistyped_command_is_answered_with_the_nearest_names():
    result = CliRunner().invoke(app, ["finetun"])
    assert result.exit_code == 2 and "Did you mean 'finetune'" in result.output


def test_a_function_keeps_its_name_beside_its_module():
    """`forgetless.train.pretrain` is the function even when its module (train/pretrain.py) was
    imported first, as it was when the package imported its names eagerly."""
    got = _loaded_after("""
        import forgetless.train.pretrain
        import forgetless.optim.build
        from forgetless.train import pretrain
        import forgetless.train, forgetless.optim
        result = [type(pretrain).__name__, type(forgetless.train.pretrain).__name__,
                  type(forgetless.optim.build).__name__, forgetless.optim.lmo.__name__]
    """)
    assert got["result"] == ["function", "function", "function", "forgetless.optim.lmo"]
