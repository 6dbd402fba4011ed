"""A reload's records: what the launcher prepared (new TEIs, the gateway's next configuration), and the
switch in progress (blue-green: new TEIs start, the gateway switches, the old ones drain and stop).

The supervisor drives the switch (supervisor.py); the launcher prepares it off the loop (startup/launcher.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from embed_launcher.supervision.child import Child, Timing
from embed_launcher.supervision.plan import ChildSpec

SWITCH_TIMEOUT_S = 15.0  # the gateway applies its new routes within this, or the reload fails
# After the gateway's switch, before SIGTERM to the old TEIs: a request that chose its route just before the
# switch connects to its TEI within this (TEI stops listening at SIGTERM, then drains what it received).
SETTLE_S = 0.5
RETIRE_MARGIN_S = 5.0  # the gateway closes the replaced routes' connections this long after the old TEIs' drain


@dataclass(frozen=True)
class Prepared:
    """A reload made ready off the loop: what to start, what to retire, and the gateway's configuration.

    ``failure`` set: nothing else counts; the reload is refused with that reason.
    """

    generation: int
    failure: str | None = None
    summary: str = ""
    nothing: bool = False  # no model and no gateway setting changed
    new_specs: tuple[ChildSpec, ...] = ()  # the TEIs of added and replaced models (names end in "@<generation>")
    retire: frozenset[str] = frozenset()  # the services whose running TEIs stop once the gateway switched
    gateway_spec: ChildSpec | None = None  # the gateway's spec from now on (its restarts get the new routes)
    gateway_json: str = ""  # the configuration file the gateway re-reads on SIGHUP
    timing: Timing | None = None
    drain_timeout_s: float = 30.0
    state: object = None  # the launcher's own record of the new configuration, handed back on commit


class Reloader(Protocol):
    """The launcher's side of a reload, as the supervisor sees it."""

    def prepare(self, generation: int) -> None:
        """Start preparing in the background; a ReloadPrepared event arrives when done."""

    def write_gateway_config(self, text: str) -> None:
        """Write the gateway's configuration file (atomically); OSError when it cannot."""

    def committed(self, prepared: Prepared) -> None:
        """The reload took effect: the prepared configuration is the running one now."""


class Phase(enum.Enum):
    STARTING = "starting"  # the new TEIs start
    SWITCHING = "switching"  # the gateway was told; waiting for each worker's line
    SETTLING = "settling"  # switched; the old TEIs get SETTLE_S before SIGTERM
    DRAINING = "draining"  # the old TEIs finish their requests in flight, then exit


@dataclass
class Switch:
    """A reload in progress."""

    prepared: Prepared
    new: list[Child]
    old: list[Child]
    previous_gateway: ChildSpec | None
    previous_json: str
    phase: Phase = Phase.STARTING
    deadline: float = 0.0
    confirmations: int = 0
    killed: bool = False
    notes: list[str] = field(default_factory=list)


def outcome(seq: int, state: str, message: str, generation: int, clock: Callable[[], float]) -> dict[str, object]:
    """The reload record of the live status (embed_manage --reload waits for it)."""
    return {"seq": seq, "state": state, "message": message, "generation": generation, "at": round(clock(), 3)}
