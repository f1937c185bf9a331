"""Where webhooks may go: not to loopback, link-local (cloud metadata), private or other
non-public addresses, unless the service allows them by name or network (`webhook_allow`).

A job's `webhook` is chosen by whoever can submit, so without this a client could make the
service POST into its own network (169.254.169.254, 10.x, localhost admin ports). The check runs
at delivery time on the addresses the name resolves to, and again in the resolver the POST
connects through (`GuardedResolver`), so a name that resolves to a public address for the check
and a private one for the connection (DNS rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What the local harness and `worker-kit dev` allow: receivers on this machine.
LOOPBACK_ALLOW = ("localhost", "127.0.0.0/8", "::1/128")


class WebhookRefused(OSError):
    """The webhook's host resolves only to addresses deliveries may not go to."""


def parse_allow(entries: Iterable[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """Split `webhook_allow` entries into host names and networks; ValueError for a bad entry."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        text = entry.strip()
        if not text:
            raise ValueError("webhook_allow entries must not be empty")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            if any(c in text for c in "/:@ ") or text.startswith("."):
                raise ValueError(
                    f"webhook_allow entry {entry!r} is neither a host name nor a network"
                ) from None
            names.add(text.lower().rstrip("."))
    return frozenset(names), tuple(networks)


class WebhookGuard:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.names, self.networks = parse_allow(allow)

    def address_refusal(self, host: str, address: str) -> str | None:
        """Why a delivery to `host` may not connect to `address` (None: it may)."""
        if host.lower().rstrip(".") in self.names:
            return None
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.networks):
            return None
        if not ip.is_global or ip.is_multicast:
            return (
                f"{host} is {address}, a loopback, link-local, private or otherwise non-public "
                "address; allow it with the service setting webhook_allow"
            )
        return None

    async def refusal(self, host: str, port: int) -> str | None:
        """Resolve `host` now and say why a delivery may not go there (None: it may)."""
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:
            if host.lower().rstrip(".") in self.names:
                return None
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except UnicodeError as exc:  # a label IDNA cannot encode: no attempt could ever succeed
                return f"{host[:80]} is not a valid host name ({exc})"
            except OSError:
                return None  # the POST fails on it like on any unreachable host, and is retried
            addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            why = self.address_refusal(host, address)
            if why is not None:
                return why
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only addresses the guard allows (refusing if none is left)."""

    def __init__(self, guard: WebhookGuard) -> None:
        self.guard = guard
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if self.guard.address_refusal(host, str(r["host"])) is None]
        if not kept:
            why = self.guard.address_refusal(host, str(found[0]["host"])) if found else "no address"
            raise WebhookRefused(why)
        return kept

    async def close(self) -> None:
        await self._inner.close()
