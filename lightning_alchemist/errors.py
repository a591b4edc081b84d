"""User-facing errors: each message is one line naming the input, what was wrong and what to do."""


class AlchemistError(Exception):
    """An error caused by user input (a path, a config value, a dataset); shown without a traceback."""


class ConfigError(AlchemistError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class DataError(AlchemistError):
    """A dataset is missing, empty or does not match what was asked for."""


class StorageError(AlchemistError, OSError):
    """An artifact could not be written (disk full, permissions); nothing half-written was kept."""


class PeerLostError(AlchemistError, RuntimeError):
    """Another process of a distributed run stopped (killed, crashed, its node lost); this one stops too."""
