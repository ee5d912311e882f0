"""Errors the engine raises for bad input: one type per cause so the CLI and Slicer can explain it."""


class SambaError(Exception):
    """Base class: every message is written for the clinician or annotator who caused it."""


class CaseFolderError(SambaError):
    """The case folder or one of its files is missing or cannot be read."""


class ModalityError(SambaError):
    """No recognisable modality, an ambiguous name, or a modality the request needs is absent."""


class VolumeError(SambaError):
    """A volume cannot be used: 4D, all zero, or a geometry that cannot be reconciled."""


class PromptError(SambaError):
    """A prompt that cannot be applied: a box outside the volume, an empty box, an unknown view."""


class WeightsError(SambaError):
    """A weight file is missing or its sha256 does not match the manifest."""


class LabelError(SambaError):
    """A label map whose values fit no known BraTS convention."""


class SettingsError(SambaError):
    """Engine settings that cannot go together, such as a runtime asked for on a device it does not run on."""
