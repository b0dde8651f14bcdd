"""The locked environments: pyproject.toml, envs/*.lock.txt and envs/*.yaml agree, and the lock is installed."""

import importlib.util
import re
from importlib import metadata

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement

_spec = importlib.util.spec_from_file_location("lock_script", REPO / "scripts" / "lock.py")
lock_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_script)
PLATFORM_SPECIFIC = lock_script.PLATFORM_SPECIFIC


def _name(spec: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(spec).name).lower()


def lock(env: str) -> dict[str, str]:
    """name -> exact version of envs/<env>.lock.txt."""
    pins = {}
    for line in (REPO / "envs" / f"{env}.lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"envs/{env}.lock.txt: {line!r} is not name==version"
            pins[name] = version
    return pins


def project_requirements(env: str) -> list[Requirement]:
    return [Requirement(r) for r in lock_script.requirements(env)]


def env_pip(env: str) -> list[str]:
    data = yaml.safe_load((REPO / "envs" / f"{env}.yaml").read_text())
    return next(d["pip"] for d in data["dependencies"] if isinstance(d, dict) and "pip" in d)


@pytest.mark.parametrize("env", ["cpu", "cuda"])
def test_lock_satisfies_pyproject(env):
    pins = lock(env)
    for req in project_requirements(env):
        name = _name(str(req))
        assert name in pins, f"{req} of pyproject.toml is not in envs/{env}.lock.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"envs/{env}.lock.txt {name}=={pins[name]} {req}"


@pytest.mark.parametrize("env", ["cpu", "cuda"])
def test_env_yaml_is_the_lock(env):
    """envs/<env>.yaml pins exactly the lock (less torch's platform-specific packages), nothing else."""
    expected = {n: v for n, v in lock(env).items() if not n.startswith(PLATFORM_SPECIFIC)}
    listed = {}
    for spec in env_pip(env):
        req = Requirement(spec)
        assert str(req.specifier).startswith("=="), f"envs/{env}.yaml: {spec} is not an exact pin"
        listed[_name(spec)] = str(req.specifier)[2:]
    assert listed == expected


def test_cuda_never_has_faiss_cpu():
    assert "faiss-gpu" in lock("cuda") and "faiss-cpu" not in lock("cuda")
    assert "faiss-cpu" in lock("cpu") and "faiss-gpu" not in lock("cpu")


@pytest.mark.parametrize("env", ["cpu.yaml", "cuda.yaml"])
def test_env_pins_python(env):
    data = yaml.safe_load((REPO / "envs" / env).read_text())
    assert any(str(d).startswith("python=") for d in data["dependencies"])


def test_installed_environment_is_the_lock():
    """`make install` installs the lock: every locked package installed here has its locked version."""
    pins = lock("cpu")
    wrong = {}
    for name in pins:
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform-specific package (nvidia-* off Linux) is not a mismatch
        if have != pins[name]:
            wrong[name] = (have, pins[name])
    assert not wrong, f"installed vs locked versions differ (reinstall with `make install`): {wrong}"
