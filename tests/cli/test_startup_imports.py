"""Start-up cost: ``shoal node`` imports only what a node runs."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

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

#: Modules a started node imports only when asked for them: the metrics
#: collector and prometheus-client (and the stdlib HTTP server it brings) on
#: the first scrape or statsd push, importlib.resources for the first request
#: of the cluster page, cramjam for the first snappy connection, the statsd
#: pusher when configured, the auth client when auth servers are; the
#: replication service and its cores on a replicated topic's first need
#: (none here: factor 1, an empty data path).
NOT_UNTIL_USED = (
    "shoal.cluster.replication",
    "shoal.cluster.adoptions",
    "shoal.cluster.replica_store",
    "shoal.replication",
    "shoal.cluster.metrics",
    "prometheus_client",
    "http.server",
    "importlib.resources",
    "cramjam",
    "shoal.cluster.statsd",
    "shoal.cluster.auth",
    "shoal.queue.auth",
)

#: The dataclasses a started node has built: its configs, whose fields are
#: the command-line options.
STARTUP_CONFIG_DATACLASSES = (
    "shoal.config.NodeConfig",
    "shoal.membership.config.MembershipConfig",
    "shoal.queue.config.QueueConfig",
    "shoal.queue.diskqueue.DiskQueueConfig",
    "shoal.cluster.http_server.HTTPConfig",
    "shoal.cluster.tls.TLSConfig",
    "shoal.membership.codec.CodecLimits",
)

#: Runs ``shoal node`` as the console script does and, once the node has
#: written its ready file (every listener bound, /ping answering), records
#: what it imported and stops it with SIGINT.
_RECORDING_NODE = textwrap.dedent(
    """
    import dataclasses, gc, json, os, signal, sys, threading, time

    ready, out = sys.argv[1], sys.argv[2]

    def record():
        for _ in range(6000):  # polls for up to 60 s
            if os.path.exists(ready):
                break
            time.sleep(0.01)
        dataclasses_built = sorted(
            f"{name}.{value.__qualname__}"
            for name, module in list(sys.modules.items())
            if name.startswith("shoal")
            for value in vars(module).values()
            if isinstance(value, type)
            and value.__module__ == name
            and dataclasses.is_dataclass(value)
        )
        state = {
            "modules": sorted(sys.modules),
            "frozen": gc.get_freeze_count(),
            "dataclasses": dataclasses_built,
        }
        with open(out + ".tmp", "w") as file:
            json.dump(state, file)
        os.replace(out + ".tmp", out)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=record, daemon=True).start()
    sys.argv = ["shoal", "node", *sys.argv[3:]]
    from shoal.cli import main

    main()
    """
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


def _modules_of_started_node(tmp_path: Path, *extra: str) -> dict[str, object]:
    """Start a node on ``tmp_path / "data"``; what it had imported once ready."""
    ready, out = tmp_path / "ready.json", tmp_path / "modules.json"
    flags = [
        "--tcp-address", "127.0.0.1:0",
        "--http-address", "127.0.0.1:0",
        "--gossip-address", "127.0.0.1:0",
        "--lookup-http-address", "127.0.0.1:0",
        "--data-path", str(tmp_path / "data"),
        "--ready-file", str(ready),
        *extra,
    ]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", _RECORDING_NODE, str(ready), str(out), *flags],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stderr
    state: dict[str, object] = json.loads(out.read_text())
    return state


@pytest.mark.slow
def test_started_node_has_not_imported_what_only_a_request_needs(tmp_path: Path) -> None:
    state = _modules_of_started_node(tmp_path)
    loaded = state["modules"]
    assert isinstance(loaded, list)
    assert "shoal.cluster.node" in loaded
    assert "shoal.cluster.operations" in loaded  # /metrics is routed, not yet rendered
    for module in (*NOT_AT_STARTUP, *NOT_UNTIL_USED):
        assert not [m for m in loaded if m == module or m.startswith(module + ".")], module
    # The import ran with the collector off and its objects were frozen after.
    assert isinstance(state["frozen"], int)
    assert state["frozen"] > 10_000
    # Only configs pay for a dataclass (methods compiled by exec, a class
    # rebuilt for its slots); the value types are msgspec structs.
    assert state["dataclasses"] == sorted(STARTUP_CONFIG_DATACLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("cause", ["factor", "factors file", "held copies"])
def test_a_node_that_may_replicate_at_start_starts_replication_before_ready(
    tmp_path: Path, cause: str
) -> None:
    # Before it serves: a restarted owner must learn its topics' adoptions first.
    data = tmp_path / "data"
    data.mkdir()
    extra: tuple[str, ...] = ()
    if cause == "factor":
        extra = ("--replication-factor", "2")
    elif cause == "factors file":
        (data / "replication.json").write_text('{"t": 2}')
    else:
        (data / "replicas").mkdir()
        (data / "replicas" / "6f.t.log").write_bytes(b"")
    loaded = _modules_of_started_node(tmp_path, *extra)["modules"]
    assert isinstance(loaded, list)
    assert "shoal.cluster.replication" in loaded
