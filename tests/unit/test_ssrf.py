"""The webhook SSRF guard, beyond the fixed examples in test_alerts_webhooks.py.

Property-based tests over the blocked ranges and their IPv6 encodings, which
hide an IPv4 address a gateway may forward to. The guard must refuse them
all: IPv4-mapped, IPv4-compatible, NAT64 and 6to4. Public addresses must
pass. Then ``post`` is tested against real loopback servers, which counts as
unit-level because it is loopback only. A blocked target is refused without
connecting unless the receiver allows private networks. Redirects are never
followed, not even to an allowed target.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from logiwatch.alerts.model import Receiver
from logiwatch.alerts.webhooks import blocked_reason, make_session, post

SECRET = "s" * 32

INTERNAL_V4 = [
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
]
INTERNAL_V6 = [ipaddress.ip_network(n) for n in ("::1/128", "fc00::/7", "fe80::/10")]


@st.composite
def address_in(draw: st.DrawFn, nets: list[Any]) -> str:
    net = draw(st.sampled_from(nets))
    offset = draw(st.integers(min_value=0, max_value=net.num_addresses - 1))
    return str(net.network_address + offset)


@given(address_in(INTERNAL_V4))
def test_every_internal_ipv4_address_is_blocked(address: str) -> None:
    assert blocked_reason(address) is not None


@given(address_in(INTERNAL_V6))
def test_every_loopback_unique_local_and_link_local_ipv6_address_is_blocked(address: str) -> None:
    assert blocked_reason(address) is not None


@given(address_in(INTERNAL_V4), st.sampled_from(["mapped", "compatible", "nat64", "6to4"]))
def test_internal_ipv4_hidden_in_an_ipv6_encoding_is_blocked(address: str, form: str) -> None:
    v4 = int(ipaddress.IPv4Address(address))
    encoded = {
        "mapped": ipaddress.IPv6Address((0xFFFF << 32) | v4),
        "compatible": ipaddress.IPv6Address(v4),
        "nat64": ipaddress.IPv6Address((0x64FF9B << 96) | v4),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80)),
    }[form]
    assert blocked_reason(str(encoded)) is not None, f"{form} form {encoded} of {address} slipped through"


@given(st.sampled_from(["169.254.169.254", "fd00:ec2::254", "100.100.100.200"]), st.sampled_from(["", "%eth0"]))
def test_cloud_metadata_endpoints_are_blocked_even_with_a_zone_suffix(address: str, zone: str) -> None:
    assert blocked_reason(address + (zone if ":" in address else "")) is not None


@given(st.sampled_from(["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888"]))
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(address) is None


class Local:
    """A loopback HTTP server that counts the requests it gets."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.status, self.location, self.hits = status, location, 0
        self.port = 0

    async def __aenter__(self) -> Local:
        async def handle(request: web.Request) -> web.Response:
            self.hits += 1
            headers = {"Location": self.location} if self.location else {}
            return web.Response(status=self.status, headers=headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def test_blocked_targets_are_refused_without_connecting_unless_private_networks_are_allowed() -> None:
    async def go() -> tuple[str, str, str, int]:
        async with Local() as server:
            url = f"http://127.0.0.1:{server.port}/hook"
            guarded = Receiver(name="r", url=url, secret=SECRET)
            allowed = Receiver(name="r", url=url, secret=SECRET, allow_private_networks=True)
            zero = Receiver(name="r", url=f"http://0.0.0.0:{server.port}/hook", secret=SECRET)
            async with make_session(allow_private=False) as session:
                refused = await post(session, guarded, "msg_1", b"{}")
                refused_zero = await post(session, zero, "msg_2", b"{}")
            hits_while_refused = server.hits
            async with make_session(allow_private=True) as session:
                ok = await post(session, allowed, "msg_3", b"{}")
            return refused.action, refused_zero.action, ok.action, hits_while_refused

    refused, refused_zero, ok, hits = asyncio.run(go())
    assert (refused, refused_zero, hits) == ("give_up", "give_up", 0)
    assert ok == "ok"


def test_redirects_are_not_followed_even_to_an_allowed_target() -> None:
    async def go() -> tuple[str, int, int]:
        async with Local() as target:
            async with Local(status=302, location=f"http://127.0.0.1:{target.port}/meta-data") as redirector:
                r = Receiver(name="r", url=f"http://127.0.0.1:{redirector.port}/hook", secret=SECRET, allow_private_networks=True)
                async with make_session(allow_private=True) as session:
                    outcome = await post(session, r, "msg_4", b"{}")
                return outcome.action, redirector.hits, target.hits

    action, redirector_hits, target_hits = asyncio.run(go())
    assert redirector_hits == 1 and target_hits == 0, "the redirect was followed"
    assert action != "ok"
