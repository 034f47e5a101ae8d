"""How a `Producer` picks a node for each publish.

A strategy is pure: given the live endpoints and an optional key, it returns
them all in the order to try. The first is where the message goes; the rest
are the fail-over order when that node is down. Returning a full order (not
one choice) is what lets a producer fail over without asking the strategy
again, and what keeps consistent hashing stable: a key's second choice is the
same node every time, so while its first node is away the key still lands on
one node.

- `RoundRobin`: each call starts one further along the list.
- `RandomOrder`: a uniformly shuffled order (seedable).
- `Weighted`: a random order in which each node comes first with
  probability proportional to its weight (Efraimidis-Spirakis sampling).
- `ConsistentHash`: rendezvous (highest random weight) hashing of the key
  with each node's name. A key maps to the same node for as long as that node
  is in the list, and adding or removing a node moves only the keys whose
  first choice it is or becomes.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import TYPE_CHECKING, Protocol

from shoal.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from shoal.client.discovery import Endpoint

__all__ = [
    "STRATEGY_NAMES",
    "ConsistentHash",
    "RandomOrder",
    "RoundRobin",
    "Strategy",
    "Weighted",
    "make_strategy",
]

#: The names `make_strategy` (and ``shoal pub --strategy``) accept.
STRATEGY_NAMES = ("round-robin", "random", "weighted", "consistent-hash")


class Strategy(Protocol):
    """Orders endpoints for one publish."""

    def order(self, endpoints: Sequence[Endpoint], key: bytes) -> list[Endpoint]:
        """Return every endpoint once, the preferred one first.

        Args:
            endpoints: the candidates, in a stable order (sorted by name).
            key: what the message is keyed by (the caller's key, or the topic
                name); strategies that do not hash ignore it.
        """
        ...


class RoundRobin:
    """Each call starts at the next endpoint."""

    def __init__(self) -> None:
        self._next = 0

    def order(self, endpoints: Sequence[Endpoint], key: bytes) -> list[Endpoint]:
        """Rotate the list by one more than last time."""
        if len(endpoints) < 2:
            return list(endpoints)
        start = self._next % len(endpoints)
        self._next = start + 1
        return [*endpoints[start:], *endpoints[:start]]


class RandomOrder:
    """A uniformly random order.

    Args:
        rng: the randomness to draw from; seed one for reproducible tests.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, endpoints: Sequence[Endpoint], key: bytes) -> list[Endpoint]:
        """Shuffle a copy of the list."""
        result = list(endpoints)
        self._rng.shuffle(result)
        return result


class Weighted:
    """A random order biased by per-node weights.

    Each endpoint draws ``u ** (1 / weight)`` with ``u`` uniform in (0, 1)
    and the order is by decreasing draw, so the first choice is node ``i``
    with probability ``w_i / sum(w)`` (Efraimidis and Spirakis, 2006).

    Args:
        weights: weight per endpoint name (or ``host:port`` TCP address);
            endpoints not named get ``default``. A weight of 0 puts a node
            last (used only when every other node failed).
        default: the weight of unnamed endpoints.
        rng: the randomness to draw from.

    Raises:
        ConfigError: a weight is negative or not finite.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        default: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.weights = dict(weights or {})
        self.default = default
        for name, weight in [*self.weights.items(), ("default", default)]:
            if not math.isfinite(weight) or weight < 0:
                raise ConfigError(f"weight of {name} must be a finite number >= 0, not {weight}")
        self._rng = rng or random.Random()

    def weight(self, endpoint: Endpoint) -> float:
        """The weight that applies to ``endpoint``."""
        for name in (endpoint.name, endpoint.tcp_address):
            if name in self.weights:
                return self.weights[name]
        return self.default

    def order(self, endpoints: Sequence[Endpoint], key: bytes) -> list[Endpoint]:
        """Order by weighted random draws, heaviest expected first."""
        draws: list[tuple[float, int, Endpoint]] = []
        for index, endpoint in enumerate(endpoints):
            weight = self.weight(endpoint)
            u = 1.0 - self._rng.random()  # in (0, 1]
            draws.append((u ** (1.0 / weight) if weight > 0 else -1.0, -index, endpoint))
        draws.sort(reverse=True)
        return [endpoint for _, _, endpoint in draws]


class ConsistentHash:
    """Rendezvous hashing of the key against each endpoint's name."""

    @staticmethod
    def score(endpoint: Endpoint, key: bytes) -> bytes:
        """The endpoint's rank for ``key``; higher comes first."""
        name = endpoint.name.encode()
        # The length prefix keeps ("ab", "c") and ("a", "bc") apart.
        return hashlib.blake2b(
            len(name).to_bytes(4, "big") + name + key, digest_size=8, person=b"shoal-hrw"
        ).digest()

    def order(self, endpoints: Sequence[Endpoint], key: bytes) -> list[Endpoint]:
        """Order by decreasing score; ties (never in practice) by name."""
        return sorted(endpoints, key=lambda e: (self.score(e, key), e.name), reverse=True)


def make_strategy(
    name: str, *, weights: Mapping[str, float] | None = None, rng: random.Random | None = None
) -> Strategy:
    """Build a strategy from its name in `STRATEGY_NAMES`.

    Raises:
        ConfigError: the name is unknown, or ``weights`` are given to a
            strategy other than ``weighted``.
    """
    if weights and name != "weighted":
        raise ConfigError(f"weights apply to the weighted strategy, not {name}")
    if name == "round-robin":
        return RoundRobin()
    if name == "random":
        return RandomOrder(rng)
    if name == "weighted":
        return Weighted(weights, rng=rng)
    if name == "consistent-hash":
        return ConsistentHash()
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
