"""The fault-injection table: each fault test records what it injected and which invariants held, and
the root conftest prints the table at the end of the session (``make test-faults``).

An entry travels on its test's report (``user_properties``), not in this module's memory alone: under
pytest-xdist the tests run in worker processes and only the reports reach the process that prints."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Injection:
    name: str
    injected: str
    invariants: dict[str, bool]
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return all(self.invariants.values())


RESULTS: list[Injection] = []  # what the session's reports carried: the table printed at the end
PENDING: list[Injection] = []  # recorded by the running test, not yet on its report
PROPERTY = "fault_injection"


def record(name: str, *, injected: str, invariants: dict[str, bool], **numbers: Any) -> Injection:
    entry = Injection(name, injected, invariants, numbers)
    PENDING.append(entry)
    return entry


def take_pending() -> list[tuple[str, dict[str, Any]]]:
    """The running test's entries as report properties (plain JSON values: xdist serialises them)."""
    taken = [(PROPERTY, json.loads(json.dumps(asdict(entry), default=str))) for entry in PENDING]
    PENDING.clear()
    return taken


def collect(properties: list[tuple[str, object]]) -> None:
    """Add the entries a report carries to the table (in the printing process)."""
    RESULTS.extend(Injection(**value) for key, value in properties if key == PROPERTY and isinstance(value, dict))


def render() -> str:
    lines = ["", "fault injection: injections tried, invariants held", ""]
    header = f"{'injection':<44} {'injected':<40} {'invariants':<11} numbers"
    lines += [header, "-" * len(header)]
    for r in RESULTS:
        held = sum(r.invariants.values())
        numbers = ", ".join(f"{k}={v}" for k, v in r.numbers.items())
        lines.append(f"{r.name:<44} {r.injected:<40} {held}/{len(r.invariants)} {'ok' if r.held else 'FAIL':<6} "
                     f"{numbers}")
        lines += [f"{'':<44}   {'held' if ok else 'BROKEN'}: {name}" for name, ok in r.invariants.items() if not ok]
    return "\n".join(lines)
