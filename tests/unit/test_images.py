"""The two images, checked statically (docker is not available here): hadolint-clean, every COPY source
exists, each CMD names a handler / command that exists, the templates name the right image, and the
code server command really starts and answers its health check (issue 15)."""

from __future__ import annotations

import importlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from notify_cli import deploy_templates
from tests.servers import free_port, stop_process

ROOT = deploy_templates.ROOT
LAMBDA = ROOT / deploy_templates.LAMBDA_IMAGE
APP = ROOT / deploy_templates.APP_IMAGE
BIN = Path(sys.executable).parent


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(path: Path, instruction: str) -> list[str] | None:
    found = [json.loads(args) for word, args in _instructions(path) if word == instruction]
    return found[-1] if found else None


@pytest.mark.parametrize("dockerfile", [LAMBDA, APP], ids=["lambda", "app"])
def test_dockerfile_is_hadolint_clean_and_copies_what_exists(dockerfile: Path) -> None:
    lint = subprocess.run([str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for word, args in _instructions(dockerfile):
        if word == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"


def test_lambda_image_runs_the_lambda_runtime_with_an_importable_handler() -> None:
    assert _instructions(LAMBDA)[0][1].startswith("public.ecr.aws/lambda/python:3.11")
    assert _exec_form(LAMBDA, "ENTRYPOINT") is None  # the base image's runtime interface client
    [handler] = _exec_form(LAMBDA, "CMD") or []
    module, _, function = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    env = " ".join(args for word, args in _instructions(LAMBDA) if word == "ENV")
    assert "NOTIFY_DATA_DIR=/tmp/" in env  # /var/task is read-only


def test_app_image_command_and_the_templates_name_the_app_image() -> None:
    command = _exec_form(APP, "CMD")
    assert command is not None and _exec_form(APP, "ENTRYPOINT") is None
    assert command[:3] == ["dagster", "api", "grpc"] and (BIN / "dagster").exists()
    module = command[command.index("--module-name") + 1]
    assert hasattr(importlib.import_module(module), "defs")
    values = yaml.safe_load(deploy_templates.HELM_PATH.read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["image"]["repository"] == deploy_templates.APP_IMAGE_NAME
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    consumer = yaml.safe_load(deploy_templates.CONSUMER_PATH.read_text())
    container = consumer["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].split(":")[0] == deploy_templates.APP_IMAGE_NAME
    assert (BIN / container["command"][0]).exists()  # the `notify` console script
    from typer.testing import CliRunner

    from notify_cli.main import app

    assert CliRunner().invoke(app, [*container["command"][1:2], "--help"]).exit_code == 0
    cfn = deploy_templates.cloudformation()
    assert deploy_templates.LAMBDA_IMAGE in cfn["Parameters"]["ImageUri"]["Description"]


def test_the_code_server_command_starts_and_answers_its_health_check(tmp_path, monkeypatch) -> None:
    """What the Helm chart runs in the app image: `dagster api grpc --module-name notify_assets.definitions`."""
    command = _exec_form(APP, "CMD") or []
    port = free_port()
    args = [str(BIN / "dagster"), *command[1:]]
    args[args.index("-p") + 1] = str(port)
    args[args.index("-h") + 1] = "127.0.0.1"
    env = {"NOTIFY_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path), "PATH": str(BIN)}
    import os

    process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        import time

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            check = subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)],
                                   capture_output=True, text=True, timeout=60)
            if check.returncode == 0:
                break
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            time.sleep(1)
        else:
            pytest.fail("the code server did not answer its health check in 180 s")
    finally:
        stop_process(process)
