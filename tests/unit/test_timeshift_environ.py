"""``make test-timeshift``'s processes write their environment without crashing under libfaketime.

libfaketime 0.9.10 calls ``getenv`` in every ``pthread_cond_timedwait``, where CPython threads wait for the
GIL, while the thread holding it may add a variable and glibc moves the array: SIGSEGV (the run of c98e405
died so, 21 tests in). ``tests/timeshift/faketime_environ.py`` publishes a new array instead. The first test
shows the crash without it (so the second can fail), the second that the same load survives with it, the
third that what is written is what getenv, ``os.environ`` and a child process read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TIMESHIFT = Path(__file__).resolve().parents[1] / "timeshift"

pytestmark = pytest.mark.skipif(shutil.which("faketime") is None,
                                reason="needs faketime (scripts/setup.sh installs it)")

# Four threads whose every pass through the eval loop may wait for the GIL, one adding and removing 200
# variables at a time (pytest adds PYTEST_CURRENT_TEST once a test; this only makes it quick to see).
LOAD = """
import os, sys, threading, time
stop = time.monotonic() + float(sys.argv[1])
def clock():
    while time.monotonic() < stop:
        time.time()
def writer():
    while time.monotonic() < stop:
        for k in range(200):
            os.environ[f"TIMESHIFT_LOAD_{k}"] = "x" * k
        for k in range(200):
            del os.environ[f"TIMESHIFT_LOAD_{k}"]
threads = [threading.Thread(target=clock) for _ in range(3)] + [threading.Thread(target=writer)]
for t in threads: t.start()
for t in threads: t.join()
print("survived", flush=True)
"""

# What the guard writes is what every reader sees: getenv in C, os.environ, time.tzset, a child process.
READS_BACK = """
import ctypes, os, subprocess, time
assert os.putenv.__module__ == "faketime_environ", os.putenv.__module__
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
os.environ["TIMESHIFT_A"] = "1"
os.environ["TIMESHIFT_B"] = "two"
assert libc.getenv(b"TIMESHIFT_A") == b"1" and libc.getenv(b"TIMESHIFT_B") == b"two"
os.environ["TIMESHIFT_A"] = "3"
del os.environ["TIMESHIFT_B"]
assert libc.getenv(b"TIMESHIFT_A") == b"3" and libc.getenv(b"TIMESHIFT_B") is None
child = subprocess.run(["sh", "-c", 'echo "$TIMESHIFT_A ${TIMESHIFT_B-unset}"; env | grep -c "^TIMESHIFT_A="'],
                       capture_output=True, text=True, check=True).stdout.split()
assert child == ["3", "unset", "1"], child
os.environ["TZ"] = "America/New_York"
time.tzset()
assert [time.strftime("%Z", time.localtime(t)) for t in (1_800_000_000, 1_814_400_000)] == ["EST", "EDT"]
for bad in ("", "A=B"):
    try:
        os.environ[bad] = "x"
    except ValueError:
        pass
    else:
        raise AssertionError(f"{bad!r} accepted")
print("read back", flush=True)
"""


def _under_faketime(code: str, *args: str, guarded: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FAKETIME")}
    env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    if guarded:
        env["PYTHONPATH"] = str(TIMESHIFT)  # its sitecustomize installs the guard, as in make test-timeshift
    return subprocess.run(["faketime", "2027-03-28 12:00:00", sys.executable, str(script), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_without_the_guard_threads_waiting_for_the_gil_crash_on_environment_writes(tmp_path: Path) -> None:
    """The hazard, shown: if this stops crashing, libfaketime no longer reads the environment in its waits
    and the guard may go. Whether glibc's realloc moves the array depends on the heap around it: measured
    here, SIGSEGV within 0.1 s in 17 of 18 tries and one try that ran 20 s; so up to five tries of 5 s."""
    runs = [_under_faketime(LOAD, "5", guarded=False, tmp_path=tmp_path)]
    while "survived" in runs[-1].stdout and len(runs) < 5:
        runs.append(_under_faketime(LOAD, "5", guarded=False, tmp_path=tmp_path))
    assert "Segmentation fault" in runs[-1].stderr, [(r.returncode, r.stderr[-500:]) for r in runs]


def test_with_the_guard_the_same_load_survives(tmp_path: Path) -> None:
    run = _under_faketime(LOAD, "5", guarded=True, tmp_path=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "survived", (run.returncode, run.stderr[-2000:])


def test_what_the_guard_writes_is_what_getenv_os_environ_and_a_child_read(tmp_path: Path) -> None:
    run = _under_faketime(READS_BACK, guarded=True, tmp_path=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "read back", (run.returncode, run.stderr[-2000:])
