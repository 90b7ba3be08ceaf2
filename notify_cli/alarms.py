"""The §8 SLO alerts as deployable files, rendered from :data:`notify_core.slo.OBJECTIVES`.

``python -m notify_cli.alarms`` writes ``deploy/prometheus/notify-rules.yml`` (checked in; the tests fail when
it differs from what the code renders and run ``promtool check rules`` / ``promtool test rules`` on it).
The CloudWatch side is :func:`notify_core.slo.cloudwatch_resources`, merged into the CloudFormation
template by ``notify templates``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

from notify_core.slo import prometheus_rules

ROOT = Path(__file__).resolve().parent.parent
RULES_PATH = ROOT / "deploy" / "prometheus" / "notify-rules.yml"
HEADER = ("# Rendered by `python -m notify_cli.alarms` from notify_core/slo.py: edit the SLO table and the operational "
          "alerts there, not this file.\n")


def rendered_rules() -> str:
    return HEADER + yaml.safe_dump(prometheus_rules(), sort_keys=False, width=200, allow_unicode=True)


def promtool() -> str | None:
    """``promtool`` on PATH, or the one ``scripts/setup.sh`` unpacked into ``.tools/`` (no server installed)."""
    local = ROOT / ".tools" / "prometheus" / "usr" / "bin" / "promtool"
    found = shutil.which("promtool")
    return found or (str(local) if os.access(local, os.X_OK) else None)


def main(argv: list[str]) -> int:
    text = rendered_rules()
    if "--check" in argv:
        if not RULES_PATH.exists() or RULES_PATH.read_text() != text:
            print(f"out of date: {RULES_PATH.relative_to(ROOT)} (run `python -m notify_cli.alarms`)")
            return 1
        return 0
    RULES_PATH.parent.mkdir(parents=True, exist_ok=True)
    RULES_PATH.write_text(text)
    print(f"wrote {RULES_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
