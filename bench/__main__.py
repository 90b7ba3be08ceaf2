"""Run every benchmark (``make bench``): each module under bench/ named bench_*.py, in name order."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> None:
    only = set(sys.argv[1:])
    sys.argv = sys.argv[:1]  # each benchmark parses its own (default) options
    for module in sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")):
        if only and module not in only:
            continue
        print(f"== {module}", flush=True)
        importlib.import_module(f"bench.{module}").main()


if __name__ == "__main__":
    main()
