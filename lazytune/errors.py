"""Exceptions. Every error caused by user input is a `ConfigError` and is raised before any process starts."""

from __future__ import annotations


class LazytuneError(Exception):
    """Base of lazytune's own errors."""


class ConfigError(LazytuneError, ValueError):
    """Bad user input: options, paths, data. Raised before anything is written or started."""


class OptionsError(ConfigError):
    """One or more options are wrong; `problems` lists each one (all are reported at once)."""

    def __init__(self, backend: str, problems: list[str]):
        self.backend = backend
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"finetune.{backend}: {len(problems)} problem(s) with the options:\n{lines}")


class UnknownOptionError(OptionsError):
    """A key that is not in the backend's whitelist (message lists the closest valid keys)."""


class OptionTypeError(OptionsError, TypeError):
    """A known key with a value of the wrong type or out of range."""


class DataError(ConfigError):
    """Missing, unreadable or malformed training data. The message names the file and, where known, the line."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        self.path = path
        self.line = line
        where = f"{path}" + (f", line {line}" if line is not None else "") + ": " if path is not None else ""
        super().__init__(where + message)


class ModelNotFoundError(ConfigError, FileNotFoundError):
    """The base model folder does not exist or is not a model."""


class TargetExistsError(ConfigError, FileExistsError):
    """The target folder is not empty and overwrite=False."""


class PlanWriteError(LazytuneError, OSError):
    """The plan's files could not be written (disk full, permissions)."""


class OutputMissingError(LazytuneError):
    """The job said it succeeded but the expected outputs are not there."""
