"""The operator's paths: what the ``notify`` commands say when a setting is wrong, and what they warn
about when a flag weakens security. Each command runs in a real process, as an operator starts it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from notify_core.errors import ConfigurationError
from notify_core.security.crypto import MASTER_FILE
from notify_core.security.files import loose_entries
from notify_core.security.keycheck import load_or_create_pepper
from notify_core.security.tls import kafka_security_config
from notify_core.settings import load_settings
from notify_core.store.factory import build_store
from tests.servers import free_port, stop_process, wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def _notify(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """``notify *args`` in a new process started from a shell whose umask is ``umask`` (022: the usual one)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")}
    return subprocess.run([sys.executable, "-m", "notify_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
                          umask=umask)


@pytest.mark.parametrize("command", [["serve"], ["consume", "--idle-exit", "0.1"], ["keys", "list"],
                                     ["audit", "verify"], ["worker"]])
def test_a_bad_setting_is_one_clear_line_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    """A malformed NOTIFY_* value (here a non-integer NOTIFY_KAFKA_LINGER_MS) made `notify serve`,
    `consume`, `keys list`, `audit verify` and `worker` die with a 60-line traceback through pydantic's
    internals (only `notify run`, `backup` and a few others caught it): the setting at fault was buried,
    and the exit code (1) read as a crash rather than a configuration error (2, as `notify run` says it)."""
    done = _notify(*command, "--data-dir", str(tmp_path / "data"), env={"NOTIFY_KAFKA_LINGER_MS": "abc"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "───" not in done.stderr
    assert "error: invalid Notify settings" in done.stderr and "kafka_linger_ms" in done.stderr


def test_backup_and_restore_keep_the_data_directory_and_the_target_private(tmp_path: Path) -> None:
    """`notify backup` and `notify restore` were the commands that never set the private umask: from a
    shell with umask 022, a backup made the data directory's stream/ folder (and Litestream's folders in
    it) and the target's files/ and stream/ folders 0755, so every local user could list a folder of
    personal data and of its backup."""
    data, target = tmp_path / "data", tmp_path / "target"
    assert _notify("keys", "list", "--data-dir", str(data)).returncode == 0  # a Store, as a first serve makes
    done = _notify("backup", "--once", "--to", str(target), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    restored = tmp_path / "restored"
    (restored / "secrets").mkdir(mode=0o700, parents=True)
    os.chmod(restored, 0o700)
    shutil.copy2(data / "secrets" / MASTER_FILE, restored / "secrets" / MASTER_FILE)  # the operator's copy
    done = _notify("restore", "--from", str(target), "--data-dir", str(restored))
    assert done.returncode == 0, done.stderr
    assert loose_entries(data) == [] and loose_entries(target) == [] and loose_entries(restored) == []


def _active_keys(data: Path) -> list[dict[str, object]]:
    done = _notify("keys", "list", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return [k for k in map(json.loads, done.stdout.splitlines()) if k["state"] == "active"]


def test_a_key_out_file_that_cannot_be_written_is_refused_before_the_key_changes(tmp_path: Path) -> None:
    """`notify keys create/rotate --out FILE` issued the key first and wrote the file after: an existing
    FILE ended the command with a FileExistsError traceback and the token shown nowhere, so `create` left a
    live (here admin) key nobody holds, and `rotate` had already set the old key to expire after the
    overlap, with its successor's token lost: the client's outage was scheduled. The file is now made (new,
    0600) before the key changes; when it cannot be, one error line and nothing changed."""
    data, shared = tmp_path / "data", tmp_path / "shared"
    shared.mkdir()
    (shared / "taken").write_text("someone else's file\n")
    done = _notify("keys", "create", "--name", "ci", "--scope", "admin", "--out", str(shared / "taken"),
                   "--data-dir", str(data))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "───" not in done.stderr, done.stderr
    assert "error:" in done.stderr and str(shared / "taken") in done.stderr
    assert _active_keys(data) == []
    assert (shared / "taken").read_text() == "someone else's file\n"

    done = _notify("keys", "create", "--name", "ci", "--scope", "admin", "--out", str(shared / "k1"),
                   "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    (key,) = _active_keys(data)
    done = _notify("keys", "rotate", str(key["key_id"]), "--out", str(shared / "taken"), "--data-dir", str(data))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    after = _active_keys(data)
    assert [k["key_id"] for k in after] == [key["key_id"]] and after[0]["expires_at"] == key["expires_at"]


def test_a_key_out_file_leaves_its_folders_mode_alone(tmp_path: Path) -> None:
    """`--out` chmod-ed the folder it names to 0700, whoever's it was: `notify keys create --out
    /tmp/ci.key` as root made /tmp 0700 (every other user's programs then fail on it); `--out ~/ci.key`
    closed the home folder. The key file is 0600 itself; an existing folder keeps its mode (a folder the
    command creates is 0700)."""
    data, shared = tmp_path / "data", tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    done = _notify("keys", "create", "--name", "ci", "--scope", "admin", "--out", str(shared / "ci.key"),
                   "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "ci.key").stat().st_mode) == 0o600
    done = _notify("keys", "create", "--name", "ci2", "--scope", "admin", "--out",
                   str(tmp_path / "new" / "ci.key"), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def _serve_stderr(tmp_path: Path, *args: str) -> str:
    """Start a real `notify serve` with ``args``, wait until it answers, stop it; its stderr."""
    port = free_port()
    err = tmp_path / "serve.stderr"
    with err.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "notify_cli.main", "serve", "--port", str(port), "--data-dir",
             str(tmp_path / "data"), *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink,
            env={**{k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")},
                 "PYTHONPATH": str(ROOT)})
        try:
            wait_healthy(server, f"http://127.0.0.1:{port}")
        finally:
            stop_process(server)
    return err.read_text(errors="replace")


def test_serving_every_interface_without_tls_is_said_out_loud(tmp_path: Path) -> None:
    """`notify serve --host 0.0.0.0` without --tls-cert served plain HTTP on every interface without a word:
    API keys (X-API-Key) and the users' data crossed the network in clear text. With --insecure-no-auth the
    banner named NOTIFY_PUBLIC_BASE_URL (http://127.0.0.1:8080 by default), not where it listened, so an
    operator read "only this machine" while every host on the network could call every route. Both now
    say where the server listens, and plain HTTP off the loopback gets its own warning."""
    said = _serve_stderr(tmp_path, "--host", "0.0.0.0", "--insecure-no-auth")
    assert "NO API KEYS CHECKED" in said
    assert "0.0.0.0" in said and "every interface" in said
    assert "clear text" in said and "--tls-cert" in said
    quiet = _serve_stderr(tmp_path)  # the default: the loopback, keys checked
    assert "clear text" not in quiet and "NO API KEYS" not in quiet


def test_a_pepper_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """The API key pepper was used whatever its file's mode: a secrets folder copied back with `cp -r`
    (umask 022) left the pepper 0644 and every local user could read it, while the master key and the key
    rings in the same folder are refused in that state ("chmod 600 it"). It is refused the same way."""
    path = tmp_path / "secrets" / "api_key_pepper"
    first = load_or_create_pepper(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        load_or_create_pepper(path)
    os.chmod(path, 0o600)
    assert load_or_create_pepper(path) == first


def test_two_processes_creating_the_pepper_at_once_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pepper was checked for (`exists`) and then created with O_EXCL and written after: a process that
    lost the race between the two (`notify serve` and `notify worker` started together on a fresh data
    directory) died with FileExistsError, and one that read in between got an empty file ("the pepper must
    be at least 16 bytes"). It is now written whole beside and linked into place; the loser reads the
    winner's pepper."""
    path = tmp_path / "secrets" / "api_key_pepper"
    theirs = load_or_create_pepper(path)  # the other process's, made just after this one looked
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self, **kw: False if self == path else real_exists(self, **kw))
    assert load_or_create_pepper(path) == theirs
    assert sorted(p.name for p in path.parent.iterdir()) == ["api_key_pepper"]  # no temp file left


def test_a_kafka_password_sent_in_clear_text_is_warned_about(tmp_path: Path) -> None:
    """NOTIFY_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT with the PLAIN mechanism sends the Kafka password, and
    every event, over the network unencrypted; it was accepted without a word (only an implied protocol is
    made SASL_SSL). It is still allowed (a broker on the same host), but each client's configuration now
    logs a warning naming the setting."""
    records, stop = _warnings_of("notify_core.security.tls")
    try:
        plain = load_settings(data_dir=tmp_path, kafka_security_protocol="SASL_PLAINTEXT",
                              kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u", kafka_sasl_password="hunter22")
        assert kafka_security_config(plain)["security.protocol"] == "sasl_plaintext"
        secure = load_settings(data_dir=tmp_path, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                               kafka_sasl_username="u", kafka_sasl_password="hunter22")
        kafka_security_config(secure)
    finally:
        stop()
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    said = records[0].getMessage() + str(vars(records[0]))
    assert "SASL_PLAINTEXT" in said and "clear text" in said and "hunter22" not in said


def _warnings_of(logger_name: str) -> tuple[list[logging.LogRecord], Callable[[], None]]:
    """The WARNING+ records ``logger_name`` emits from now on, and the call that stops collecting."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)

    def stop() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return records, stop


def test_a_store_with_personal_fields_in_clear_is_warned_about(tmp_path: Path) -> None:
    """NOTIFY_ENCRYPT_PERSONAL_FIELDS=false (the switch that turns sealing at rest off) built a Store that
    writes emails and names in clear without a word in any log, so a leftover test setting in a deployment's
    environment went unnoticed. Each Store built so now logs a warning naming the setting."""
    records, stop = _warnings_of("notify_core.store.factory")
    try:
        build_store(load_settings(data_dir=tmp_path / "sealed")).close()
        assert records == []
        build_store(load_settings(data_dir=tmp_path / "clear", encrypt_personal_fields=False)).close()
    finally:
        stop()
    assert len(records) == 1 and "NOTIFY_ENCRYPT_PERSONAL_FIELDS" in records[0].getMessage()


def test_commands_writing_outside_the_data_directory_write_private_files(tmp_path: Path) -> None:
    """`notify simulate` (and `evaluate`) never set the private umask, unlike the commands that open the
    data directory: from a shell with umask 022, a simulation's Stores, stream log and outbox (the real
    customers' ids of the source export) and its report were 0644 / 0755. The `notify` group now sets it
    before any subcommand; the stand-alone module entry points (how the tests start the consumer, the
    gateway and the worker) set it too."""
    from tests.retail_fixture import generated_retail

    source = generated_retail(tmp_path / "retail.parquet", invoices=300)
    os.chmod(source, 0o600)
    work, report = tmp_path / "work", tmp_path / "out" / "report.json"
    done = _notify("simulate", "--source", str(source), "--users", "5", "--days", "1", "--campaigns", "4",
                   "--policy", "notify", "--workdir", str(work), "--output", str(report), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(json.loads(report.read_text())["policies"]) == {"notify"}
    assert any(work.rglob("*.sqlite*")), "the simulation wrote no Store: the check below would be empty"
    assert loose_entries(work) == [] and loose_entries(report.parent) == []

    data = tmp_path / "data"
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")}
    standalone = subprocess.run(
        [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(data), "--idle-exit",
         "0.1"], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT)}, umask=0o022)
    assert standalone.returncode == 0, standalone.stderr
    assert any(data.iterdir()) and loose_entries(data) == []


def test_a_mistyped_webhook_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    """The error for an invalid webhook URL repeated the URL, so a mistyped scheme put the token in its
    query on the terminal and in the logs; a URL with `user:password@` was accepted although the channel
    never sends them (the receiver would answer 401 and every notification be dead-lettered); a port that
    is not a number was a ValueError traceback."""
    env = {"NOTIFY_WEBHOOK_SECRET": "signing-secret-for-the-test"}
    for url, said in (("htps://hooks.example/notify?token=tok-s3cr3t", "scheme 'htps'"),
                      ("https://ops:pa55-s3cr3t@hooks.example/notify", "user:password@"),
                      ("https://hooks.example:s3cr3t/notify", "http(s)://host[:port]/path")):
        done = _notify("worker", "--channel", "webhook", "--webhook-url", url, "--data-dir", str(tmp_path / "d"),
                       env=env)
        assert done.returncode == 2, (url, done.stderr)
        assert "error:" in done.stderr and said in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "s3cr3t" not in done.stderr + done.stdout
        logs = "".join(p.read_text() for p in (tmp_path / "d").rglob("*.jsonl"))
        assert "s3cr3t" not in logs
