"""One small exception hierarchy for every user-facing failure.

Messages say what was wrong, with which file or value, and what to do. Front ends
(CLI, napari, batch) catch :class:`PlannerError` and show its message as one line.
"""

from __future__ import annotations


class PlannerError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, wrong option)."""


class DicomSeriesError(PlannerError):
    """A DICOM file or series cannot be read as one consistent image volume."""


class VolumeError(PlannerError):
    """An image volume is unsuitable for the requested operation (shape, grid, modality)."""


class LabelMapError(PlannerError):
    """A label map does not match its image or uses labels outside the vocabulary."""


class ModelError(PlannerError):
    """A model bundle is missing, corrupt, or does not fit the input."""


class PlanError(PlannerError):
    """No valid plan can be made, or a plan file is malformed."""


class OutcomeModelError(PlannerError):
    """The analgesia-duration model or a registry file is unusable."""
