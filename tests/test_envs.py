"""The conda environment files list the same packages as pyproject.toml (faiss-gpu in the CUDA one)."""

import re

import pytest
import tomllib
import yaml
from conftest import REPO


def _normalise(spec: str) -> str:
    return re.sub(r"\s+", "", spec).lower().replace("_", "-")


def project_dependencies() -> set[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {_normalise(d) for d in data["project"]["dependencies"]}


def env_pip_dependencies(name: str) -> set[str]:
    env = yaml.safe_load((REPO / "envs" / name).read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_normalise(d) for d in pip}


def test_cpu_env_matches_pyproject():
    assert env_pip_dependencies("cpu.yaml") == project_dependencies()


def test_cuda_env_matches_pyproject_with_faiss_gpu():
    expected = {d.replace("faiss-cpu", "faiss-gpu") for d in project_dependencies()}
    deps = env_pip_dependencies("cuda.yaml")
    assert deps == expected
    assert not any(d.startswith("faiss-cpu") for d in deps), "never both faiss-cpu and faiss-gpu"


@pytest.mark.parametrize("name", ["cpu.yaml", "cuda.yaml"])
def test_env_pins_python(name):
    env = yaml.safe_load((REPO / "envs" / name).read_text())
    assert any(str(d).startswith("python=") for d in env["dependencies"])
