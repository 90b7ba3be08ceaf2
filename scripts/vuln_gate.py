#!/usr/bin/env python3
"""Dependency gate: match the installed Python packages against an offline PyPA advisory snapshot.

    .venv/bin/python scripts/vuln_gate.py [--advisories ../shared/advisories] [--exceptions security/exceptions.toml]
                                          [--fail-on critical|high|medium|low] [--json out.json] [--today YYYY-MM-DD]

Reads every OSV record (YAML, ``vulns/<package>/*.yaml``) whose package is installed here
(``importlib.metadata``, names normalised with packaging's ``canonicalize_name``), and decides whether the
installed version is affected from the record's ``ECOSYSTEM`` ranges (``introduced`` / ``fixed`` /
``last_affected``; ``GIT`` ranges skipped) and its explicit ``versions`` list; withdrawn records are
ignored. Severity comes from the record's CVSS v3 vector (base score computed here: critical >= 9.0,
high >= 7.0, medium >= 4.0, low > 0), else "unknown" -- most records of the snapshot carry no score, and
an unscored advisory may well be critical (PyYAML's arbitrary code execution has none), so unknown ranks
as critical unless ``--unknown-as`` says otherwise (a visible weakening).

Prints one line per finding, then a summary; exits 1 when a finding at or above ``--fail-on`` (default:
critical) is not covered by a *current* exception in ``security/exceptions.toml``::

    [[exception]]
    id = "PYSEC-2024-0"          # the advisory id (or one of its aliases)
    package = "somepackage"
    reason = "why this does not apply to Notify / what mitigates it"
    expires = 2026-12-31         # after this date the exception no longer counts

An exception past its expiry is reported and ignored (so it must be looked at again). The snapshot is
dated (see its README): advisories published after it are missing, so where an online service (PyPI's
JSON API, OSV) is reachable, run ``pip-audit`` as well; this gate is the offline floor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tomllib
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADVISORIES = REPO.parent / "shared" / "advisories"
DEFAULT_EXCEPTIONS = REPO / "security" / "exceptions.toml"
LEVELS = ("unknown", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    severity: str
    score: float | None
    fixed: tuple[str, ...]
    summary: str
    excepted: str | None = None  # the exception's reason when one covers it


# --- CVSS v3.x base score (FIRST's specification, section 7.1) ---------------------------------------
_W = {"AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}, "AC": {"L": 0.77, "H": 0.44},
      "UI": {"N": 0.85, "R": 0.62}, "C": {"H": 0.56, "L": 0.22, "N": 0.0}}
_PR = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}


def _roundup(x: float) -> float:
    i = round(x * 100000)
    return i / 100000.0 if i % 10000 == 0 else (math.floor(i / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float | None:
    try:
        parts = dict(p.split(":", 1) for p in vector.split("/")[1:])
        scope = parts["S"]
        iss = 1 - (1 - _W["C"][parts["C"]]) * (1 - _W["C"][parts["I"]]) * (1 - _W["C"][parts["A"]])
        impact = 6.42 * iss if scope == "U" else 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
        exploit = 8.22 * _W["AV"][parts["AV"]] * _W["AC"][parts["AC"]] * _PR[scope][parts["PR"]] * _W["UI"][parts["UI"]]
    except (KeyError, ValueError):
        return None
    if impact <= 0:
        return 0.0
    if scope == "U":
        return _roundup(min(impact + exploit, 10))
    return _roundup(min(1.08 * (impact + exploit), 10))


def level_of(score: float | None) -> str:
    if score is None:
        return "unknown"
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "unknown"


# --- OSV matching --------------------------------------------------------------------------------------
def _version(text: str) -> Version | None:
    try:
        return Version(str(text))
    except InvalidVersion:
        return None


def affected(record: dict[str, Any], package: str, installed: Version) -> tuple[bool, tuple[str, ...]]:
    """Whether ``installed`` of ``package`` is affected by ``record``; also the fixed versions named."""
    fixed_versions: list[str] = []
    hit = False
    for entry in record.get("affected") or []:
        pkg = entry.get("package") or {}
        if canonicalize_name(str(pkg.get("name", ""))) != package or str(pkg.get("ecosystem", "PyPI")) != "PyPI":
            continue
        if str(installed) in {str(v) for v in entry.get("versions") or []}:
            hit = True
        for rng in entry.get("ranges") or []:
            if rng.get("type") != "ECOSYSTEM":
                continue
            lower: Version | None = None
            for event in rng.get("events") or []:
                if "introduced" in event:
                    lower = Version("0") if str(event["introduced"]) == "0" else _version(event["introduced"])
                elif "fixed" in event:
                    fixed_versions.append(str(event["fixed"]))
                    upper = _version(event["fixed"])
                    if lower is not None and upper is not None and lower <= installed < upper:
                        hit = True
                    lower = None
                elif "last_affected" in event:
                    upper = _version(event["last_affected"])
                    if lower is not None and upper is not None and lower <= installed <= upper:
                        hit = True
                    lower = None
            if lower is not None and lower <= installed:  # introduced with no end: every later version
                hit = True
    return hit, tuple(fixed_versions)


def severity_of(record: dict[str, Any]) -> tuple[str, float | None]:
    scores = [cvss3_base_score(str(s.get("score", ""))) for s in record.get("severity") or []
              if str(s.get("type", "")).startswith("CVSS_V3")]
    known = [s for s in scores if s is not None]
    if known:
        return level_of(max(known)), max(known)
    named = str((record.get("database_specific") or {}).get("severity", "")).lower()
    return (named if named in LEVELS else "unknown"), None


def installed_packages() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonicalize_name(name)] = dist.version
    return found


def scan(advisories: Path, packages: dict[str, str]) -> list[Finding]:
    vulns = advisories / "vulns"
    if not vulns.is_dir():
        raise SystemExit(f"no advisory snapshot at {advisories} (expected {vulns}/<package>/*.yaml)")
    folders = {canonicalize_name(p.name): p for p in vulns.iterdir() if p.is_dir()}
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)  # every scalar a string: "1.10" stays "1.10"
    findings: list[Finding] = []
    for package, version_text in sorted(packages.items()):
        folder = folders.get(package)
        installed = _version(version_text)
        if folder is None or installed is None:
            continue
        for path in sorted(folder.glob("*.yaml")):
            record = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
            if record.get("withdrawn"):
                continue
            hit, fixed = affected(record, package, installed)
            if hit:
                level, score = severity_of(record)
                summary = " ".join(str(record.get("summary") or record.get("details") or "").split())[:140]
                findings.append(Finding(package, version_text, str(record.get("id", path.stem)),
                                        tuple(str(a) for a in record.get("aliases") or []), level, score, fixed,
                                        summary))
    return findings


def load_exceptions(path: Path, today: dt.date) -> tuple[dict[tuple[str, str], str], list[str]]:
    """(current exceptions keyed by (package, id) -> reason, problems: expired or malformed entries)."""
    if not path.exists():
        return {}, []
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    current: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for entry in doc.get("exception", []):
        ident, package = str(entry.get("id", "")), canonicalize_name(str(entry.get("package", "")))
        reason, expires = str(entry.get("reason", "")).strip(), entry.get("expires")
        if not (ident and package and reason and isinstance(expires, dt.date)):
            problems.append(f"malformed exception {entry!r}: needs id, package, reason and a date `expires`")
        elif expires < today:
            problems.append(f"expired exception {package} {ident} (expired {expires}): no longer applied")
        else:
            current[(package, ident)] = f"{reason} (until {expires})"
    return current, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--advisories", type=Path, default=DEFAULT_ADVISORIES)
    parser.add_argument("--exceptions", type=Path, default=DEFAULT_EXCEPTIONS)
    parser.add_argument("--fail-on", choices=LEVELS[1:], default="critical")
    parser.add_argument("--unknown-as", choices=LEVELS[1:], default="critical",
                        help="how to rank advisories without a CVSS score (default: as critical, the safe side)")
    parser.add_argument("--json", type=Path, default=None, help="also write the findings as JSON here")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None, help="for exception expiry (tests)")
    parser.add_argument("--packages", type=Path, default=None,
                        help="JSON {name: version} to check instead of what is installed (tests)")
    args = parser.parse_args(argv)
    today = args.today or dt.datetime.now(dt.UTC).date()  # an entry point: the wall clock is allowed here
    packages = (json.loads(args.packages.read_text()) if args.packages else installed_packages())
    packages = {canonicalize_name(k): str(v) for k, v in packages.items()}
    exceptions, problems = load_exceptions(args.exceptions, today)
    findings = []
    for f in scan(args.advisories, packages):
        reason = next((exceptions[(f.package, i)] for i in (f.id, *f.aliases) if (f.package, i) in exceptions), None)
        findings.append(Finding(**{**asdict(f), "excepted": reason}))
    threshold = LEVELS.index(args.fail_on)

    def rank(f: Finding) -> int:
        return LEVELS.index(args.unknown_as if f.severity == "unknown" else f.severity)

    blocking = [f for f in findings if rank(f) >= threshold and f.excepted is None]
    for f in sorted(findings, key=lambda f: (-LEVELS.index(f.severity), f.package, f.id)):
        score = f"{f.score:.1f}" if f.score is not None else "-"
        mark = "EXCEPTED" if f.excepted else ("BLOCKING" if f in blocking else "report")
        fixed = f" fixed in {', '.join(f.fixed)}" if f.fixed else ""
        print(f"{mark:8} {f.severity:8} {score:>4} {f.package}=={f.version} {f.id}{fixed}: {f.summary}"
              + (f" [exception: {f.excepted}]" if f.excepted else ""))
    for problem in problems:
        print(f"WARNING  {problem}")
    counts = {level: sum(f.severity == level for f in findings) for level in reversed(LEVELS)}
    print(f"vuln gate: {len(packages)} packages checked against {args.advisories}; findings {counts}; "
          f"{len(blocking)} blocking at >= {args.fail_on}")
    if args.json:
        args.json.write_text(json.dumps({"packages": len(packages), "counts": counts, "blocking": len(blocking),
                                         "findings": [asdict(f) for f in findings]}, indent=1))
    return 1 if blocking else 0


if __name__ == "__main__":
    sys.exit(main())
