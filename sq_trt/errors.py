"""The one exception family for user errors.

Anything raised as :class:`SqTrtError` is the user's to fix (a path, a flag, an
input file); the CLI prints its message on one line and exits 1. Anything else
is a bug and keeps its traceback. Every message says what was received, what
was expected, and what to do.
"""

from __future__ import annotations


class SqTrtError(Exception):
    """Base class of every error the user can fix."""

    exit_code = 1


class ConfigError(SqTrtError):
    """A config, recipe or CLI value is invalid."""


class ModelLoadError(SqTrtError):
    """A model could not be found or loaded."""


class UnsupportedArchitectureError(SqTrtError):
    """The model's architecture is not in the registry."""


class DataError(SqTrtError):
    """Calibration or evaluation data is missing, empty or too short."""


class ArtifactError(SqTrtError):
    """An artifact directory or its manifest is missing, corrupt or mismatched."""


class MissingDependencyError(SqTrtError):
    """An optional dependency needed by a stage is not installed."""


class CalibrationError(SqTrtError):
    """Calibration saw invalid activations (NaN/inf) or no data."""


class ExportError(SqTrtError):
    """ONNX export or Q/DQ lint failed."""


class BuildError(SqTrtError):
    """An engine build failed (parser or builder error)."""


class GateFailedError(SqTrtError):
    """The accuracy gate rejected the candidate. Its own exit code, not 1."""

    exit_code = 3


class GenerationError(SqTrtError):
    """A generation input does not fit the graph or engine (prompt past the context, cache shape...)."""
