"""One exception type per failure domain; messages name the input and the fix."""


class FerError(Exception):
    """Base class of every error the platform raises on purpose.

    Attributes:
        stage: the retrain flow's stage it ended, once the flow has named it; the message
            then starts with it, so a failed run's state (and its alert) says where it failed.
    """

    stage: str | None = None

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.stage} stage: {message}" if self.stage else message


class ConfigError(FerError):
    """A setting or configuration value is missing or invalid."""


class DatasetError(FerError):
    """The dataset cannot be acquired, read or is not in the FER layout."""


class DataQualityError(FerError):
    """The dataset failed critical data-quality expectations."""


class GateFailed(FerError):
    """A trained model did not meet the promotion criteria.

    Args:
        reasons: every failed criterion, one human-readable line each.
    """

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("gate failed: " + "; ".join(self.reasons))


class RegistryError(FerError):
    """The model store cannot be read or written, or holds inconsistent data."""


class ImportRefused(RegistryError):
    """An externally trained model cannot be imported: wrong file, record or dataset."""


class StoreUnavailable(RegistryError):
    """The store could not be reached or answered with a server error: worth retrying later."""


class IntegrityError(RegistryError):
    """A stored file does not match the sha256 it was published with: it is never used."""


class InputError(FerError):
    """An uploaded image cannot be used; the message says why and what to send instead.

    Args:
        message: the problem and what to send instead.
        reason: what kind of problem, for programs (an HTTP status, a metric's label):
            ``missing``, ``empty``, ``too_large``, ``too_many_pixels``, ``not_an_image`` or
            ``corrupt``.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ServiceError(FerError):
    """A local service (Prefect server, S3 store) cannot be started or reached."""
