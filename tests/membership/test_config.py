import dataclasses

import pytest

from shoal.errors import ConfigError
from shoal.membership import MembershipConfig


def test_config_lan_matches_memberlist_defaults() -> None:
    config = MembershipConfig.lan()
    assert (config.probe_interval, config.probe_timeout, config.indirect_checks) == (1.0, 0.5, 3)
    assert (config.suspicion_mult, config.suspicion_max_timeout_mult) == (4, 6)
    assert (config.retransmit_mult, config.gossip_interval, config.gossip_nodes) == (4, 0.2, 3)
    assert (config.push_pull_interval, config.gossip_to_the_dead_time) == (30.0, 30.0)
    assert (config.awareness_max_multiplier, config.packet_budget) == (8, 1400)
    assert config.reconnect_interval == 10.0


def test_config_wan_overrides_timing() -> None:
    config = MembershipConfig.wan()
    assert (config.probe_interval, config.probe_timeout, config.suspicion_mult) == (5.0, 3.0, 6)
    assert (config.gossip_nodes, config.gossip_interval, config.push_pull_interval) == (
        4,
        0.5,
        60.0,
    )


def test_config_local_is_fast() -> None:
    config = MembershipConfig.local()
    assert (config.indirect_checks, config.retransmit_mult, config.suspicion_mult) == (1, 4, 3)
    assert (config.probe_timeout, config.gossip_interval) == (0.2, 0.1)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MembershipConfig.lan().probe_interval = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides",
    [
        {"probe_interval": 0.0},
        {"probe_timeout": 1.0},
        {"probe_interval": float("nan")},
        {"indirect_checks": -1},
        {"suspicion_mult": 0},
        {"awareness_max_multiplier": 0},
        {"gossip_nodes": 0},
        {"app_budget_share": 1.0},
        {"reconnect_jitter": 1.0},
        {"packet_budget": 100},
        {"packet_budget": 100_000},
        {"meta_max_size": 1000},
        {"dead_retention": -1.0},
        {"max_app_message_size": 10},
    ],
)
def test_config_rejects_out_of_range_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(MembershipConfig.lan(), **overrides)  # type: ignore[arg-type]
