"""The fault-injection table: each fault test records what it injected and which invariants held, and
the root conftest prints the table at the end of the session (``make test-faults``)."""

from __future__ import annotations

from dataclasses import dataclass, field
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


RESULTS: list[Injection] = []


def record(name: str, *, injected: str, invariants: dict[str, bool], **numbers: Any) -> Injection:
    entry = Injection(name, injected, invariants, numbers)
    RESULTS.append(entry)
    return entry


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
