"""The harness cannot fake a run: anything that reaches TensorRT's C libraries gets null and fails."""

from __future__ import annotations

import json

from .harness import BindingsEnv


def test_building_through_the_stubs_fails(trt_env: BindingsEnv) -> None:
    proc = trt_env.run_python(
        "import json, tensorrt as trt\n"
        "logger = trt.Logger()\n"
        "out = {}\n"
        "for name, make in (('Builder', lambda: trt.Builder(logger)), ('Runtime', lambda: trt.Runtime(logger))):\n"
        "    try:\n"
        "        out[name] = 'returned ' + repr(make())\n"
        "    except Exception as exc:\n"
        "        out[name] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(out))"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("Builder", "Runtime"):
        assert "nullptr" in result[name], f"{name} through the stub libraries did not fail: {result[name]}"


def test_project_backend_sees_the_real_version(trt_env: BindingsEnv) -> None:
    # The builder's version gate runs against the real module of each version (pure Python, no C calls).
    proc = trt_env.run_python(
        "import json\n"
        "from sq_trt.build.backends import load_tensorrt\n"
        "from sq_trt.errors import BuildError\n"
        "b = load_tensorrt()\n"
        "try:\n"
        "    b.compute_capability_enum('8.9'); refused = False\n"
        "except BuildError:\n"
        "    refused = True\n"
        "print(json.dumps({'name': b.name, 'version': b.version, 'plugins': b.supports_plugins, 'cc_refused': refused}))"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"name": "tensorrt", "version": trt_env.version, "plugins": True, "cc_refused": True}
