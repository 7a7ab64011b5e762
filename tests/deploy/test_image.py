"""The image, checked without a Docker engine: its lock agrees with pyproject.toml, its
environment is rebuilt by the Dockerfile's own build steps and passes `pip check`, and the
services start from that environment (`ctloop run <service>`, the image's entry point)
with the environment the compose file gives them, the registry on PostgreSQL, until each
compose healthcheck passes.

The environment is built once per lock and Dockerfile (a hash of both names the folder,
`.venv-image`); ctloop itself is installed into it at every run, as the Dockerfile's last step
does, so the services run this checkout's code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.supervisor import SERVICES, Stack
from tests.deploy.compose import compose_config
from tests.integration.conftest import postgres_database, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
LOCK = ROOT / "deploy" / "docker" / "requirements.lock"
IMAGE_VENV = ROOT / ".venv-image"


def build_steps() -> list[str]:
    """The shell commands of the Dockerfile's build stage (`RUN` lines, continuations joined),
    each split at `&&`."""
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    steps: list[str] = []
    for line in lines[stages[0] : stages[1]]:
        if line.startswith("RUN "):
            steps += [part.strip() for part in line[4:].split("&&")]
    return steps


def as_here(step: str, venv: Path, src: Path) -> list[str]:
    """A build step with the image's paths replaced by this machine's (the venv for
    /opt/ctloop, a copy of what the Dockerfile COPYs for /src)."""
    step = step.replace("/opt/ctloop", str(venv)).replace("/src/requirements.lock", str(LOCK))
    step = re.sub(r"/src\b", str(src), step)
    words = shlex.split(step)
    if words[0] == "python":  # the image's python:3.11; here the 3.11 running the tests
        words[0] = sys.executable
    return words


def run(words: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(words, capture_output=True, text=True, timeout=900, cwd=cwd)
    assert done.returncode == 0, f"{shlex.join(words)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def copied_sources(target: Path) -> Path:
    """What the Dockerfile COPYs into /src."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    for folder in ("shared", "services"):
        shutil.copytree(ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_the_lock_is_what_uv_resolves_from_pyproject(tmp_path: Path) -> None:
    """The lock's header holds the command that made it (`make lock`); run again on a copy of
    the lock (uv keeps the pins it finds there, as pip-compile does), it must change nothing:
    a dependency added to pyproject.toml, or a pin that no longer satisfies it, fails here.
    Candidates are PyPI's as of the date in the command, so a new release cannot fail it."""
    header = next(line for line in LOCK.read_text().splitlines() if "uv pip compile" in line)
    words = shlex.split(header.lstrip("# "))
    output = tmp_path / "requirements.lock"
    shutil.copy(LOCK, output)
    words[words.index("-o") + 1] = str(output)
    uv = Path(sys.executable).parent / "uv"
    env = {
        **os.environ,
        "SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
    }
    done = subprocess.run([str(uv), *words[1:], "--quiet"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr

    def pins(text: str) -> list[str]:
        return [line for line in text.splitlines() if line and not line.lstrip().startswith("#")]

    assert pins(output.read_text()) == pins(LOCK.read_text()), (
        "deploy/docker/requirements.lock does not match pyproject.toml: run `make lock`"
    )


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's /opt/ctloop, built by the Dockerfile's steps on this machine."""
    steps = build_steps()
    assert steps[0].startswith("python -m venv /opt/ctloop"), steps
    key = hashlib.sha256(DOCKERFILE.read_bytes() + LOCK.read_bytes()).hexdigest()[:16]
    venv = IMAGE_VENV / key
    src = copied_sources(tmp_path_factory.mktemp("src"))
    dependencies = [s for s in steps if "requirements.lock" in s or s.startswith("python -m venv")]
    if not (venv / ".built").exists():
        shutil.rmtree(IMAGE_VENV, ignore_errors=True)  # older builds
        for step in dependencies:
            run(as_here(step, venv, src))
        (venv / ".built").touch()
    for step in steps[len(dependencies) :]:  # ctloop itself, and what follows (pip check)
        run(as_here(step, venv, src))
    return venv


def test_the_image_environment_is_consistent(image_env: Path, tmp_path: Path) -> None:
    assert "No broken requirements" in run([str(image_env / "bin" / "pip"), "check"])
    # every service module imports from what the image holds (not this checkout)
    modules = [f"services.{s}.main" for s in SERVICES]
    probe = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; import services; print(services.__file__)"
    where = run([str(image_env / "bin" / "python"), "-c", probe, *modules], cwd=tmp_path)
    assert str(image_env) in where


@pytest.fixture(scope="module")
def stack_from_the_image(image_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = compose_config()
    env: dict[str, str] = {}
    for service in SERVICES:
        env.update(config["services"][service]["environment"])
    schema = next(
        v["source"] for v in config["services"]["serving"]["volumes"] if v["target"] == env["CTLOOP_SCHEMA"]
    )
    folder = tmp_path_factory.mktemp("image-stack")
    with postgres_database() as database:
        # What only a container has is replaced; everything else is the compose file's.
        env.update(
            CTLOOP_REGISTRY_DB_URL=database,
            CTLOOP_HOST="127.0.0.1",
            CTLOOP_DATA_DIR=str(folder),
            CTLOOP_SCHEMA=schema,
        )
        del env["CTLOOP_KAFKA_BOOTSTRAP"]  # the embedded broker, started by the stack
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CTLOOP_")}
        os_env = {**environment, **env}
        stack = Stack(
            env=os_env,
            free_ports=True,
            out=(folder / "stack.log").open("w"),
            launcher=[str(image_env / "bin" / "ctloop")],
            cwd=folder,
        )
        try:
            yield stack.start(timeout_s=300)
        finally:
            stack.stop()


def test_each_service_starts_from_the_image_with_the_compose_environment(
    stack_from_the_image: Stack, image_env: Path
) -> None:
    stack = stack_from_the_image
    config = compose_config()
    for service in SERVICES:
        command = config["services"][service]["healthcheck"]["test"]
        assert command[:3] == ["CMD", "ctloop", "probe"]
        probe = [str(image_env / "bin" / "ctloop"), *command[2:]]

        def healthy(words: list[str] = probe) -> bool:
            return subprocess.run(words, env=stack.env, capture_output=True, timeout=30).returncode == 0

        wait_for(healthy, f"{service}'s compose healthcheck ({shlex.join(command[1:])})", timeout_s=120)
    # the registry runs on PostgreSQL, with its migrations applied at start-up
    assert httpx.get(f"{stack.url('registry')}/v1/models", timeout=10, headers=stack.auth()).json() == []
    assert "postgresql" in stack.env["CTLOOP_REGISTRY_DB_URL"]
