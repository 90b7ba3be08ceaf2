"""The dependency gate: installed packages against the offline PyPA advisory snapshot (this test is what
makes CI run it), plus its matching rules, CVSS scoring and dated exceptions on a synthetic snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GATE = REPO / "scripts" / "vuln_gate.py"
SNAPSHOT = REPO.parent / "shared" / "advisories"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GATE), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not (SNAPSHOT / "vulns").is_dir(), reason="no advisory snapshot at ../shared/advisories")
def test_installed_packages_have_no_blocking_advisory(tmp_path: Path) -> None:
    done = _run("--json", str(tmp_path / "gate.json"))
    report = json.loads((tmp_path / "gate.json").read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["blocking"] == 0 and report["packages"] > 100  # it really looked at the environment
    assert "vuln gate:" in done.stdout


ADVISORIES = {
    "demo-pkg/PYSEC-1.yaml": """
id: PYSEC-1
aliases: [CVE-1]
summary: remote code execution
affected:
- package: {name: Demo_Pkg, ecosystem: PyPI}
  ranges:
  - type: GIT
    events: [{introduced: "0"}, {fixed: abcdef}]
  - type: ECOSYSTEM
    events: [{introduced: "0"}, {fixed: "1.10"}]
severity:
- type: CVSS_V3
  score: CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H
""",
    "demo-pkg/PYSEC-2.yaml": """
id: PYSEC-2
affected:
- package: {name: demo-pkg, ecosystem: PyPI}
  ranges:
  - type: ECOSYSTEM
    events: [{introduced: "1.2"}, {last_affected: "1.9"}]
severity:
- type: CVSS_V3
  score: CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H
""",
    "demo-pkg/PYSEC-3.yaml": """
id: PYSEC-3
withdrawn: "2024-01-01T00:00:00Z"
affected:
- package: {name: demo-pkg, ecosystem: PyPI}
  ranges:
  - type: ECOSYSTEM
    events: [{introduced: "0"}]
""",
    "other/PYSEC-4.yaml": """
id: PYSEC-4
affected:
- package: {name: other, ecosystem: PyPI}
  versions: ["2.0"]
""",
}


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    for rel, text in ADVISORIES.items():
        path = tmp_path / "adv" / "vulns" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "adv"


def _packages(tmp_path: Path, **versions: str) -> str:
    path = tmp_path / "pk.json"
    path.write_text(json.dumps(versions))
    return str(path)


def test_ranges_severity_and_exceptions(tmp_path: Path, snapshot: Path) -> None:
    none = str(tmp_path / "none.toml")
    # 1.9: both PYSEC-1 (< 1.10, "1.10" stays a string: 1.9 < 1.10) and PYSEC-2 (1.2..1.9 inclusive); 3 withdrawn
    hit = _run("--advisories", str(snapshot), "--exceptions", none, "--packages",
               _packages(tmp_path, **{"demo-pkg": "1.9", "other": "2.0"}), "--json", str(tmp_path / "o.json"))
    found = {f["id"]: f for f in json.loads((tmp_path / "o.json").read_text())["findings"]}
    assert set(found) == {"PYSEC-1", "PYSEC-2", "PYSEC-4"}
    assert (found["PYSEC-1"]["severity"], found["PYSEC-1"]["score"]) == ("critical", 9.8)
    assert (found["PYSEC-2"]["severity"], found["PYSEC-2"]["score"]) == ("high", 7.5)
    assert found["PYSEC-4"]["severity"] == "unknown"
    assert hit.returncode == 1 and "BLOCKING critical  9.8 demo-pkg==1.9 PYSEC-1" in hit.stdout
    # fixed versions are clean; unknown severity blocks unless visibly ranked lower
    clean = _run("--advisories", str(snapshot), "--exceptions", none, "--packages",
                 _packages(tmp_path, **{"demo-pkg": "1.10", "other": "2.1"}))
    assert clean.returncode == 0 and "findings {'critical': 0, 'high': 0" in clean.stdout
    unknown_only = _packages(tmp_path, other="2.0")
    assert _run("--advisories", str(snapshot), "--exceptions", none, "--packages", unknown_only).returncode == 1
    assert _run("--advisories", str(snapshot), "--exceptions", none, "--packages", unknown_only,
                "--unknown-as", "low").returncode == 0
    # a dated exception (by alias) covers the critical one until it expires
    exceptions = tmp_path / "exceptions.toml"
    exceptions.write_text('[[exception]]\nid = "CVE-1"\npackage = "demo-pkg"\n'
                          'reason = "the RCE needs the optional server extra, not installed"\nexpires = 2040-06-30\n')
    one = _packages(tmp_path, **{"demo-pkg": "1.0"})
    covered = _run("--advisories", str(snapshot), "--exceptions", str(exceptions), "--packages", one,
                   "--today", "2040-06-30")
    assert covered.returncode == 0 and "EXCEPTED" in covered.stdout and "until 2040-06-30" in covered.stdout
    expired = _run("--advisories", str(snapshot), "--exceptions", str(exceptions), "--packages", one,
                   "--today", "2040-07-01")
    assert expired.returncode == 1 and "expired exception demo-pkg CVE-1" in expired.stdout
    exceptions.write_text('[[exception]]\nid = "PYSEC-1"\npackage = "demo-pkg"\nexpires = 2040-06-30\n')
    no_reason = _run("--advisories", str(snapshot), "--exceptions", str(exceptions), "--packages", one,
                     "--today", "2040-01-01")
    assert no_reason.returncode == 1 and "malformed exception" in no_reason.stdout


def test_cvss_base_scores() -> None:
    sys.path.insert(0, str(GATE.parent))
    try:
        import vuln_gate
    finally:
        sys.path.remove(str(GATE.parent))
    assert vuln_gate.cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8
    assert vuln_gate.cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H") == 10.0
    assert vuln_gate.cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N") == 6.1
    assert vuln_gate.cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N") == 0.0
    assert vuln_gate.cvss3_base_score("garbage") is None
