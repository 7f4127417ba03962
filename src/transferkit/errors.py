"""User-facing errors: each carries one line that names the file or field and what to do."""

from __future__ import annotations


class TransferkitError(Exception):
    """An error caused by the user's input; the CLI prints it as one line, without a traceback."""


class DataError(TransferkitError):
    """A data folder or file is unusable as given."""


class BackboneError(TransferkitError):
    """A backbone name or weights file cannot be resolved or loaded."""


class RunDirError(TransferkitError):
    """A run directory is missing, incomplete, or would be overwritten."""


class TrainingError(TransferkitError):
    """Training cannot go on (non-finite loss, nothing to train)."""


class CheckpointError(TransferkitError):
    """A checkpoint is missing, damaged, or does not belong to the run being resumed."""
