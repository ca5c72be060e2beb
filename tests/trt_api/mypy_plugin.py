"""mypy plugin: type the TensorRT module the project passes around as a plain ``ModuleType``.

The builder takes TensorRT as a parameter (``Backend.trt: ModuleType``, from
``sq_trt.deps.require("tensorrt", ...)`` or ``importlib.import_module``), which
mypy types as ``types.ModuleType``: every ``trt.X`` would be ``Any`` and nothing
would be checked. This plugin, loaded only by the conformance check, resolves

* ``require("<module>", ...)`` calls to the real module's type, and
* attribute access on a ``ModuleType`` value whose name is a configured alias
  (``trt.Builder``, ``backend.trt.NetworkDefinitionCreationFlag``, ``trtp.register``)
  to the attribute of the module under test, reporting a missing one as
  ``Module "tensorrt" has no attribute "X"``.

Configuration comes from the environment the check sets:
``SQ_TRT_MYPY_ALIASES="trt=tensorrt,trtp=tensorrt.plugin"`` and
``SQ_TRT_MYPY_REQUIRE="tensorrt=tensorrt,tensorrt.plugin=tensorrt.plugin"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mypy.errorcodes import ATTR_DEFINED
from mypy.nodes import MemberExpr, MypyFile, NameExpr, StrExpr
from mypy.plugin import AttributeContext, FunctionContext, Plugin
from mypy.types import AnyType, Instance, Type, TypeOfAny

REQUIRE_FUNCTIONS = ("sq_trt.deps.require", "importlib.import_module")
PROJECT_PREFIXES = ("sq_trt", "trt_api_probe")


def _mapping(variable: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in os.environ.get(variable, "").split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


class TensorRTModulePlugin(Plugin):
    """Resolves ``ModuleType`` values that hold TensorRT to the module under test."""

    def __init__(self, options: object) -> None:
        super().__init__(options)  # type: ignore[arg-type]
        self.aliases = _mapping("SQ_TRT_MYPY_ALIASES")
        self.required = _mapping("SQ_TRT_MYPY_REQUIRE")
        self._module_types: dict[str, Instance] = {}

    def get_additional_deps(self, file: MypyFile) -> list[tuple[int, str, int]]:
        """Make mypy load the module under test for every project file, even if none imports it statically."""
        if not file.fullname.startswith(PROJECT_PREFIXES):
            return []
        targets = set(self.aliases.values()) | set(self.required.values())
        return [(10, target, -1) for target in sorted(targets)]

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        """Hook ``require``-style dynamic imports."""
        return self._dynamic_import if fullname in REQUIRE_FUNCTIONS else None

    def get_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        """Hook attribute access on plain ``ModuleType`` values."""
        return self._module_attribute if fullname.startswith("types.ModuleType.") else None

    def _module_type(self, api: object, target: str) -> Instance | None:
        if target not in self._module_types:
            module = getattr(api, "modules", {}).get(target)
            if module is None:
                return None
            self._module_types[target] = api.expr_checker.module_type(module)  # type: ignore[attr-defined]
        return self._module_types[target]

    def _dynamic_import(self, ctx: FunctionContext) -> Type:
        if not ctx.args or not ctx.args[0] or not isinstance(ctx.args[0][0], StrExpr):
            return ctx.default_return_type
        target = self.required.get(ctx.args[0][0].value)
        module_type = self._module_type(ctx.api, target) if target else None
        return module_type or ctx.default_return_type

    def _module_attribute(self, ctx: AttributeContext) -> Type:
        expr = ctx.context
        if ctx.is_lvalue or not isinstance(expr, MemberExpr):
            return ctx.default_attr_type
        base = expr.expr
        base_name = base.name if isinstance(base, (NameExpr, MemberExpr)) else None
        target = self.aliases.get(base_name or "")
        module_type = self._module_type(ctx.api, target) if target else None
        if module_type is None or module_type.extra_attrs is None:
            return ctx.default_attr_type
        attrs = module_type.extra_attrs.attrs
        if expr.name in attrs:
            return attrs[expr.name]
        if ctx.type is not None and isinstance(ctx.type, Instance) and ctx.type.type.get(expr.name):
            return ctx.default_attr_type  # every module has it (__name__, __file__, ...)
        ctx.api.fail(f'Module "{target}" has no attribute "{expr.name}"', expr, code=ATTR_DEFINED)
        return AnyType(TypeOfAny.from_error)


def plugin(version: str) -> type[Plugin]:
    """mypy's plugin entry point."""
    return TensorRTModulePlugin
