"""systemd units for the embedded default on one machine, run unattended (``deploy/systemd/``).

``make dev`` and the CLI's long-running commands are what one machine runs; nothing restarted them when they
stopped. A worker or consumer that exits 75 (its Store's disk full, its data directory replaced under it:
``notify_cli.STOPPED_UNFINISHED``), a crash, the OOM killer or a reboot left the box without deliveries or
without event persistence until someone noticed. These units run each process under systemd:

* ``notify.target`` starts them all; each service is ``PartOf`` it, so ``systemctl stop notify.target``
  stops every process that has the data directory open (what ``notify restore`` requires:
  :meth:`notify_core.sqlite_tx.WriteGate.exclusive`);
* ``Restart=on-failure`` after 5 s (exit 75 included: the next process opens the file now there), but never
  after exit 2, a refusal that a restart cannot change (a bad setting; ``notify backup`` refusing to replace
  the backup of a wiped data directory before ``notify restore``): the unit stays failed, not looping; with the
  stop signal each command handles (SIGTERM: the batch in hand is finished or given up uncommitted) and a
  stop timeout above the longest such finish;
* the stream log's and the Store's commits fsynced (``NOTIFY_STREAM_FSYNC``, ``NOTIFY_STORE_FSYNC``): an
  acknowledged event or change survives a power cut;
* one unprivileged user, the data directory as its ``StateDirectory`` (0700) and ``UMask=0077``, so files
  are 0600 whatever the command; the checkout read-only (``ProtectSystem=strict``), no capabilities, a
  system-call filter, settings and secrets from an optional root-owned ``/etc/notify/notify.env``;
* the Dagster daemon and webserver over an instance whose storage is under the data directory (its
  ``dagster.yaml``: the repository's, with its three storage folders moved there; one owner of the rest);
* ``prometheus.yml``: what a Prometheus on the machine scrapes, with the alert rules.

Rendered by ``notify templates`` for ``/opt/notify`` (a checkout after ``make setup``) and
``/var/lib/notify``; :func:`units` renders them for any folders (the tests run each unit's commands as
written: ``tests/unit/test_systemd_units.py``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

INSTALL_DIR = Path("/opt/notify")
DATA_DIR = Path("/var/lib/notify")
BACKUP_DIR = Path("/var/lib/notify-backup")
ENV_FILE = Path("/etc/notify/notify.env")
USER = "notify"
SERVE_PORT = 8080
WEBSERVER_PORT = 3000
CONSUMER_METRICS_PORT = 9100  # as the Kubernetes consumer's: /metrics for Prometheus, /healthz
WORKER_METRICS_PORT = 9101
BACKUP_METRICS_PORT = 9102
TARGET = "notify.target"
DAGSTER_YAML = "dagster.yaml"  # rendered beside the units, copied into DAGSTER_HOME at each start
PROMETHEUS_YAML = "prometheus.yml"  # a scrape configuration for a Prometheus on the same machine
HEADER = "# Rendered by `notify templates` from the code: do not edit by hand (a drop-in overrides it).\n"
YAML_HEADER = "# Rendered by `notify templates` from the code: do not edit by hand.\n"

# What every service gets: no privilege, nothing of the system writable but the data directory.
HARDENING = (
    # read-only, not hidden: the .venv's interpreter may link to a Python under /root or /home (pyenv, uv)
    ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "read-only"), ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"), ("ProtectControlGroups", "yes"), ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"), ("RestrictNamespaces", "yes"), ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"), ("LockPersonality", "yes"), ("RemoveIPC", "yes"), ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""), ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    # a call outside systemd's own set for services fails with EPERM rather than killing the process
    ("SystemCallArchitectures", "native"), ("SystemCallFilter", "@system-service"),
    ("SystemCallErrorNumber", "EPERM"),
)


@dataclass(frozen=True)
class Service:
    """One long-running command of the embedded default, as a unit."""

    name: str
    description: str
    argv: tuple[str, ...]  # the command: its first word is a script of the checkout's .venv/bin
    stop_timeout_s: int = 60
    environment: Mapping[str, str] = field(default_factory=dict)
    state_directories: tuple[str, ...] = ()
    before_start: tuple[tuple[str, ...], ...] = ()
    after: tuple[str, ...] = ()  # other units of the target this one starts after


@dataclass(frozen=True)
class Layout:
    """Where the units put things: the checkout, the data directory, the backup folder, the ports."""

    install_dir: Path = INSTALL_DIR
    data_dir: Path = DATA_DIR
    backup_dir: Path = BACKUP_DIR
    user: str = USER
    serve_port: int = SERVE_PORT
    webserver_port: int = WEBSERVER_PORT
    consumer_metrics_port: int = CONSUMER_METRICS_PORT
    worker_metrics_port: int = WORKER_METRICS_PORT
    backup_metrics_port: int = BACKUP_METRICS_PORT

    units_dir: Path | None = None  # where the rendered files are (default: the checkout's deploy/systemd)

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"

    @property
    def rendered_dir(self) -> Path:
        return self.units_dir if self.units_dir is not None else self.install_dir / "deploy" / "systemd"


def services(layout: Layout) -> list[Service]:
    """The processes of one machine. The API, the worker, the consumer and the backup serve ``/metrics`` (the rules of
    ``deploy/prometheus/``) and ``/healthz`` on loopback ports. The consumer waits as a standby when another
    holds its group (a second box's, or one still stopping) instead of exiting 3 in a restart loop; the
    backup goes to the folder of its own state directory unless ``NOTIFY_BACKUP_URL`` in the environment
    file names another (s3://...: a backup on the same disk survives a deleted file, not a lost disk)."""
    dagster_env = {"DAGSTER_HOME": str(layout.dagster_home)}
    copy_instance = ("/usr/bin/install", "-D", "-m", "0600", str(layout.rendered_dir / DAGSTER_YAML),
                     str(layout.dagster_home / DAGSTER_YAML))
    workspace = str(layout.install_dir / "workspace.yaml")
    # The instance's storage is created (and migrated after an upgrade of Dagster) once, by the daemon's unit,
    # before the UI starts: started together on a new instance, the two raced to create the same SQLite
    # tables and the daemon died on "table job_ticks already exists".
    migrate = (str(layout.install_dir / ".venv" / "bin" / "dagster"), "instance", "migrate")
    return [
        Service("notify-serve", "Notify HTTP API (the Lambda handlers behind the local gateway)",
                # its default log level (WARNING): INFO is a line per request, which journald drops past its
                # rate limit at the spec's peak
                ("notify", "serve", "--host", "127.0.0.1", "--port", str(layout.serve_port)), stop_timeout_s=30),
        Service("notify-worker", "Notify delivery worker",
                ("notify", "worker", "--metrics-port", str(layout.worker_metrics_port))),
        Service("notify-consume", "Notify event consumer (stream to Store)",
                ("notify", "consume", "--standby", "--metrics-port", str(layout.consumer_metrics_port))),
        Service("notify-backup", "Notify continuous backup (Litestream and file snapshots)",
                ("notify", "backup", "--metrics-port", str(layout.backup_metrics_port)),
                environment={"NOTIFY_BACKUP_URL": str(layout.backup_dir)},
                state_directories=(layout.backup_dir.name,)),
        Service("notify-dagster-daemon", "Notify's Dagster daemon (sensors, automation, run queue)",
                ("dagster-daemon", "run", "-w", workspace), stop_timeout_s=90, environment=dagster_env,
                before_start=(copy_instance, migrate)),
        Service("notify-dagster-webserver", "Notify's Dagster UI",
                ("dagster-webserver", "-h", "127.0.0.1", "-p", str(layout.webserver_port), "-w", workspace),
                stop_timeout_s=30, environment=dagster_env, before_start=(copy_instance,),
                after=("notify-dagster-daemon.service",)),
    ]


def _lines(section: str, pairs: list[tuple[str, str]]) -> str:
    return f"[{section}]\n" + "".join(f"{key}={value}\n" for key, value in pairs)


def service_unit(service: Service, layout: Layout) -> str:
    """One ``.service`` file."""
    bin_dir = layout.install_dir / ".venv" / "bin"
    # the log's and the Store's commits fsynced: what was answered 2xx survives a power cut, not only a killed
    # process (a 10-event commit of the log: 0.34 ms against 0.09 ms on this machine's disk)
    environment = {"NOTIFY_ENV": "local", "NOTIFY_DATA_DIR": str(layout.data_dir), "NOTIFY_STREAM_FSYNC": "true",
                   "NOTIFY_STORE_FSYNC": "true", **service.environment}
    state = (layout.data_dir.name, *service.state_directories)
    unit = [("Description", service.description), ("Documentation", "file:" + str(layout.install_dir / "README.md")),
            ("After", " ".join(("network-online.target", *service.after))), ("Wants", "network-online.target"),
            ("PartOf", TARGET)]
    body: list[tuple[str, str]] = [("Type", "exec"), ("User", layout.user), ("Group", layout.user),
                                   ("WorkingDirectory", str(layout.install_dir))]
    body += [("Environment", shlex.quote(f"{key}={value}")) for key, value in environment.items()]
    body += [("EnvironmentFile", f"-{ENV_FILE}")]  # after Environment=: its values win
    body += [("ExecStartPre", shlex.join(argv)) for argv in service.before_start]
    body += [("ExecStart", shlex.join((str(bin_dir / service.argv[0]), *service.argv[1:]))),
             ("Restart", "on-failure"), ("RestartSec", "5"), ("RestartPreventExitStatus", "2"),
             ("KillSignal", "SIGTERM"),
             ("TimeoutStopSec", str(service.stop_timeout_s)), ("UMask", "0077"),
             ("StateDirectory", " ".join(state)), ("StateDirectoryMode", "0700"), *HARDENING]
    return HEADER + _lines("Unit", unit) + "\n" + _lines("Service", body) + "\n" + _lines(
        "Install", [("WantedBy", TARGET)])


def target_unit(layout: Layout) -> str:
    wants = " ".join(f"{service.name}.service" for service in services(layout))
    return HEADER + _lines("Unit", [("Description", "Notify on one machine"), ("Wants", wants)]) + "\n" + _lines(
        "Install", [("WantedBy", "multi-user.target")])


def dagster_instance(repository_yaml: str, layout: Layout) -> str:
    """The repository's ``dagster.yaml`` with its storage under the data directory (its relative folders are
    the checkout's, which the units keep read-only)."""
    config: dict[str, Any] = yaml.safe_load(repository_yaml)
    base = layout.data_dir / "dagster"
    config["storage"]["sqlite"]["base_dir"] = str(base / "storage")
    config["local_artifact_storage"]["config"]["base_dir"] = str(base)
    config["compute_logs"]["config"]["base_dir"] = str(base / "compute_logs")
    return YAML_HEADER + yaml.safe_dump(config, sort_keys=False)


def prometheus_config(layout: Layout) -> str:
    """A Prometheus on the same machine: the four ``/metrics`` endpoints the units serve on loopback, and the
    alert rules of ``deploy/prometheus/`` (the SLOs of :mod:`notify_core.slo`, and a backup replica behind)."""
    targets = (("notify-serve", layout.serve_port), ("notify-worker", layout.worker_metrics_port),
               ("notify-consume", layout.consumer_metrics_port), ("notify-backup", layout.backup_metrics_port))
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(layout.install_dir / "deploy" / "prometheus" / "notify-rules.yml")],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for job, port in targets],
    }
    return YAML_HEADER + yaml.safe_dump(config, sort_keys=False)


def units(layout: Layout, *, repository_yaml: str) -> dict[str, str]:
    """Every file of ``deploy/systemd/`` by name, for ``layout``."""
    files = {f"{service.name}.service": service_unit(service, layout) for service in services(layout)}
    files[TARGET] = target_unit(layout)
    files[DAGSTER_YAML] = dagster_instance(repository_yaml, layout)
    files[PROMETHEUS_YAML] = prometheus_config(layout)
    return files
