"""Exception family of hivcomorb.

Every error a user can act on derives from :class:`HivcomorbError`. Messages
name the file, column and row number involved and the fix, and never a
patient identifier or a raw patient value beyond the one cell at fault.
"""

# Exit status of `hivcomorb ingest` and `hivcomorb score` when they write their outputs but
# quarantined more rows than ingest.max_quarantined_share or score.max_quarantined_share allows.
EXIT_TOO_MANY_QUARANTINED = 3


class HivcomorbError(Exception):
    """Base class of every error raised on purpose by hivcomorb."""


class ContractError(HivcomorbError):
    """The data contract or a site's extension of it is invalid."""


class ConfigError(HivcomorbError):
    """A configuration file is missing, unreadable or has an invalid value."""


class MappingError(HivcomorbError):
    """A site mapping file does not fit the extract it is applied to."""


class ExtractError(HivcomorbError):
    """An extract cannot be read, or has no usable rows."""


class ModelError(HivcomorbError):
    """A model cannot be trained, loaded or applied to the data given."""


class DataNotFoundError(HivcomorbError):
    """Input data that a stage needs is missing from the configured location."""
