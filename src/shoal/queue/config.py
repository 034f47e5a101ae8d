"""Limits and defaults of the NSQ data plane, with nsqd's names and values.

Every field maps 1:1 to a ``shoal node`` flag (underscores become dashes), as
nsqd's options do. Durations are float seconds; nsqd's flags take Go
durations, the CLI converts.
"""

from __future__ import annotations

import dataclasses

from shoal.errors import ConfigError


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """Configuration of topics, channels and client connections.

    Attributes:
        node_id: 0..1023, written into every message ID (nsq.md §4.10). IDs are
            unique across a cluster only if node IDs are.
        mem_queue_size: messages kept in memory per topic and per channel before
            spilling to the backend; 0 sends everything to the backend.
        msg_timeout: default time a delivered message may stay unanswered before
            it is requeued.
        max_msg_timeout: upper bound of a client's IDENTIFY ``msg_timeout`` and of
            how far TOUCH may extend a delivery.
        max_req_timeout: upper bound of a REQ delay (clamped) and of a DPUB or
            HTTP ``defer`` (refused beyond it).
        max_rdy_count: largest RDY a client may send.
        max_msg_size: largest single message body in bytes.
        max_body_size: largest IDENTIFY, AUTH or MPUB body in bytes.
        max_heartbeat_interval: upper bound of a client's heartbeat interval.
        client_timeout: default read deadline is this; heartbeats go out at half.
        max_output_buffer_size: upper bound of a client's output buffer in bytes.
        output_buffer_timeout: default flush interval of buffered message frames.
        min_output_buffer_timeout: lower bound of a client's flush interval.
        max_output_buffer_timeout: upper bound of a client's flush interval.
        max_channel_consumers: connections allowed per channel; 0 is unlimited.
        max_deflate_level: highest deflate level a client may negotiate.
        deflate: offer raw deflate compression after IDENTIFY (nsqd's default).
        snappy: offer snappy (framing format) compression after IDENTIFY.
        tls_v1: the node has a certificate, so IDENTIFY may upgrade to TLS.
        tls_required: every TCP command but IDENTIFY needs TLS first
            (nsqd's ``--tls-required`` true or ``tcp-https``).
        auth_required: an auth server is configured: PUB, MPUB, DPUB and SUB
            need AUTH first, and IDENTIFY says so.
        e2e_processing_latency_percentiles: quantiles of publish-to-FIN
            latency each channel reports in /stats (e.g. 1.0, 0.99, 0.95);
            empty measures nothing, as in nsqd.
        e2e_processing_latency_window_time: how far back those quantiles look.
        sync_on_publish: the node's durable mode. The shell makes every
            publish durable before it answers (one group-committed fsync off
            the event loop, `shoal.cluster.disk_queue`), and channels keep
            each message in their backend until it is FINed, deferred ones
            included (`shoal.queue.channel`).
    """

    node_id: int = 0
    mem_queue_size: int = 10_000
    msg_timeout: float = 60.0
    max_msg_timeout: float = 15 * 60.0
    max_req_timeout: float = 60 * 60.0
    max_rdy_count: int = 2500
    max_msg_size: int = 1_048_576
    max_body_size: int = 5_242_880
    max_heartbeat_interval: float = 60.0
    client_timeout: float = 60.0
    max_output_buffer_size: int = 65_536
    output_buffer_timeout: float = 0.25
    min_output_buffer_timeout: float = 0.025
    max_output_buffer_timeout: float = 30.0
    max_channel_consumers: int = 0
    max_deflate_level: int = 6
    deflate: bool = True
    snappy: bool = True
    tls_v1: bool = False
    tls_required: bool = False
    auth_required: bool = False
    e2e_processing_latency_percentiles: tuple[float, ...] = ()
    e2e_processing_latency_window_time: float = 600.0
    sync_on_publish: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.node_id <= 1023:
            raise ConfigError(f"node-id must be 0..1023, got {self.node_id}")
        if self.mem_queue_size < 0:
            raise ConfigError("mem-queue-size must not be negative")
        for name in (
            "msg_timeout",
            "max_msg_timeout",
            "max_req_timeout",
            "max_heartbeat_interval",
            "client_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive")
        if self.msg_timeout > self.max_msg_timeout:
            raise ConfigError("msg-timeout must not exceed max-msg-timeout")
        if self.max_rdy_count < 1:
            raise ConfigError("max-rdy-count must be at least 1")
        if self.max_msg_size < 1 or self.max_body_size < 1:
            raise ConfigError("max-msg-size and max-body-size must be positive")
        if not 1 <= self.max_deflate_level <= 9:
            raise ConfigError("max-deflate-level must be 1..9")
        for quantile in self.e2e_processing_latency_percentiles:
            if not 0 < quantile <= 1:
                raise ConfigError(f"e2e-processing-latency-percentile {quantile} is not in (0, 1]")
        if self.e2e_processing_latency_window_time <= 0:
            raise ConfigError("e2e-processing-latency-window-time must be positive")
        if self.max_channel_consumers < 0:
            raise ConfigError("max-channel-consumers must not be negative")
