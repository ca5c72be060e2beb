"""The harness imports TensorRT's real bindings, and its stubs are derived, not hand-kept."""

from __future__ import annotations

import json

from .elf import defined_symbols, needed_libraries, system_library, undefined_symbols
from .harness import BindingsEnv


def _extension(env: BindingsEnv) -> object:
    assert env.site_dir is not None
    return env.site_dir / "tensorrt_bindings" / "tensorrt.so"


def test_stubs_define_exactly_the_nvidia_imports(trt_env: BindingsEnv) -> None:
    ext = _extension(trt_env)
    assert trt_env.lib_dir is not None
    imported = undefined_symbols(ext)  # type: ignore[arg-type]
    stubbed = set(trt_env.symbols)
    # Every stubbed symbol is one the extension really imports, and the builder's entry point is among them.
    assert stubbed <= imported
    assert "createInferBuilder_INTERNAL" in stubbed
    # Nothing the system already provides is stubbed (e.g. libc's dlopen, which 11.x imports unversioned).
    libc = system_library("libc.so.6")
    assert libc is not None
    assert not stubbed & defined_symbols(libc)
    # One stub per NVIDIA library the extension needs, under that exact SONAME, defining every symbol.
    nvidia = [n for n in needed_libraries(ext) if n.startswith("libnv")]  # type: ignore[arg-type]
    assert sorted(p.name for p in trt_env.lib_dir.glob("libnv*")) == sorted(nvidia)
    assert f"libnvinfer.so.{trt_env.major}" in nvidia
    for soname in nvidia:
        stub = trt_env.lib_dir / soname
        assert (
            f"[{soname}]"
            in __import__("subprocess")
            .run(["readelf", "-d", str(stub)], capture_output=True, text=True)
            .stdout
        )
        assert stubbed <= defined_symbols(stub)


def test_real_bindings_import_from_the_wheel(trt_env: BindingsEnv) -> None:
    proc = trt_env.run_python(
        "import json, tensorrt as trt, tensorrt_bindings.tensorrt as ext, tensorrt.plugin as trtp\n"
        "print(json.dumps({'version': trt.__version__, 'file': ext.__file__, 'plugin': trtp.__file__,\n"
        "  'flags': list(trt.NetworkDefinitionCreationFlag.__members__),\n"
        "  'classes': sum(isinstance(v, type) for v in vars(ext).values())}))"
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["version"] == trt_env.version
    assert str(trt_env.site_dir) in info["file"] and str(trt_env.site_dir) in info["plugin"]
    assert "STRONGLY_TYPED" in info["flags"]
    # The whole API is there (11.4 has ~230 classes), not a hand-written subset.
    assert info["classes"] > 150
