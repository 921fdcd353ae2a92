"""Where tools may connect: never to the engine's own network unless the operator allows it.

A tenant's HTTP tool (and the http_json built-in, whose URL can come from what an end user typed)
must not reach loopback, private, link-local (cloud metadata at 169.254.169.254), multicast, reserved
or otherwise non-global addresses, IPv4 or IPv6 (IPv4-mapped IPv6 included). The check runs where
the connection is made: GuardedConnector resolves the host and refuses the request unless every
address it would connect to is allowed, so a DNS answer cannot change between the check and the
connect. Redirects are followed by the caller one hop at a time (engine.brain.tools.http), so each hop goes
through the same check.

ENGINE_TOOL_ALLOW_HOSTS (host names or literal addresses, comma-separated) and
ENGINE_TOOL_ALLOW_NETWORKS (CIDRs) open exceptions, e.g. a shop API on the private network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefused(Exception):
    """The tool may not connect there; the message names the host, never a path or a query."""


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, hosts: str, networks: str) -> EgressPolicy:
        """From the settings' comma-separated values; raises ValueError on a bad CIDR."""
        names = frozenset(h.strip().lower().rstrip(".") for h in hosts.split(",") if h.strip())
        nets = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks.split(",") if n.strip())
        return cls(names, nets)

    def check(self, host: str, addresses: Sequence[str]) -> None:
        """Raise EgressRefused unless host is allowed by name or every address is allowed."""
        if host.lower().rstrip(".").strip("[]") in self.allow_hosts:
            return
        if not addresses:
            raise EgressRefused(f"{host}: no address")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
            if not self._allowed(address):
                raise EgressRefused(f"{host}: {address} is not a public address (tools may not reach it)")

    def _allowed(self, address: Address) -> bool:
        if any(address in net for net in self.allow_networks if net.version == address.version):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self._allowed(address.ipv4_mapped)
        return public(address)


def public(address: Address) -> bool:
    """A globally routable unicast address: not loopback, private, link-local (metadata), multicast,
    reserved, unspecified, shared (100.64/10) or documentation space."""
    return address.is_global and not address.is_multicast and not address.is_reserved


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector whose every connection is checked against an EgressPolicy, after resolution
    (literal addresses included), on the addresses it will actually connect to."""

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> Any:
        hosts = await super()._resolve_host(host, port, traces=traces)
        self._policy.check(host, [h["host"] for h in hosts])
        return hosts


def session(policy: EgressPolicy, timeout: float) -> aiohttp.ClientSession:
    """The HTTP session tools use: guarded, no redirects followed by aiohttp itself (the caller
    follows them hop by hop), no proxy or netrc from the environment."""
    return aiohttp.ClientSession(
        connector=GuardedConnector(policy),
        timeout=aiohttp.ClientTimeout(total=timeout),
        trust_env=False,
    )
