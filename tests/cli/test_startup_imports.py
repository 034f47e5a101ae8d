"""Start-up cost: ``shoal node`` imports only what a node runs."""

import json
import subprocess
import sys

import pytest

#: Modules a node without a gossip key or a config file never needs.
NOT_AT_STARTUP = (
    "shoal.cli.commands",
    "shoal.cli.cluster_up",
    "shoal.cli.simulate",
    "shoal.client",
    "shoal.simulations",
    "cryptography",
    "tomllib",
)


@pytest.mark.slow
def test_cli_imports_no_subcommand_module_it_does_not_run() -> None:
    code = (
        "import json, sys; import shoal.cli.main; "
        "prefixes = ('shoal', 'crypto', 'toml'); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(prefixes))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    assert "shoal.cluster.node" in loaded  # the node itself is there
    for module in NOT_AT_STARTUP:
        assert not [m for m in loaded if m == module or m.startswith(module + ".")], module


@pytest.mark.slow
def test_lazy_commands_still_run_and_list() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "shoal", "keygen"], check=True, capture_output=True, timeout=60
    )
    assert len(run.stdout.strip()) == 44  # base64 of 32 bytes
    listing = subprocess.run(
        [sys.executable, "-m", "shoal", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for name in ("cluster", "keygen", "leave", "lookup", "members", "node", "pub", "simulate"):
        assert f"  {name} " in listing
