"""One exception tree for the whole of keyfab.

Every message is a single line that is safe to show a user or write to a log: it
never contains a private key, a PIN or a token. The CLI prints ``str(error)`` and
exits non-zero; the API turns the class into a stable problem ``type``.
"""


class KeyfabError(Exception):
    """Base of every error keyfab raises on purpose."""


class ConfigError(KeyfabError):
    """A recipe, workspace or command-line setting is wrong."""


class RotError(KeyfabError):
    """A root of trust refused or failed an operation."""


class KeyNotFoundError(RotError):
    """No key or object under the requested label."""


class KeyExistsError(RotError):
    """A key or object already exists under the requested label."""


class KeyNotExportableError(RotError):
    """Someone asked for private key material that never leaves its root of trust."""


class RotLockedError(RotError):
    """The root of trust was locked at the end of provisioning."""


class UnsupportedError(RotError):
    """The root of trust cannot do what was asked (algorithm, capability)."""


class PkiError(KeyfabError):
    """A certificate authority operation failed."""


class VerificationError(KeyfabError):
    """A signature, certificate chain or piece of evidence did not verify."""


class RegistryError(KeyfabError):
    """The registry database is missing, unreadable or of the wrong schema."""


class AuditError(KeyfabError):
    """The audit log is broken or could not be appended to."""


class ReportError(KeyfabError):
    """An evidence pack could not be written, or does not verify (the message names the file)."""


class ProvisionError(KeyfabError):
    """Provisioning a device or a batch failed."""


class MissingExtraError(ConfigError):
    """A command or driver needs an optional part of keyfab that is not installed.

    The message names the extra to install, e.g. ``keyfab serve needs: pip
    install 'keyfab[server]'``.
    """

    def __init__(self, what: str, extra: str):
        super().__init__(f"{what} needs: pip install 'keyfab[{extra}]'")
        self.extra = extra


class RefusedError(KeyfabError):
    """The authority refused a request. ``slug`` names why in one stable word.

    The service turns the class into an HTTP status and the slug into the
    problem ``type`` (``urn:keyfab:problem:<slug>``); the CLI prints the message.
    """

    default_slug = "refused"

    def __init__(self, message: str, *, slug: str | None = None):
        super().__init__(message)
        self.slug = slug or self.default_slug


class InvalidRequestError(RefusedError):
    """The request itself is wrong (a malformed CSR, a subject keyfab does not sign)."""

    default_slug = "invalid-request"


class AuthenticationError(RefusedError):
    """The caller could not be identified (bad, expired, revoked or used-up credential)."""

    default_slug = "unauthorized"


class PermissionDeniedError(RefusedError):
    """The caller is known but may not do this (wrong role, revoked device or station)."""

    default_slug = "forbidden"


class NotFoundError(RefusedError):
    """No such device, certificate, batch, token or station."""

    default_slug = "not-found"


class ConflictError(RefusedError):
    """The request conflicts with the registry's current state (a name in use, a race)."""

    default_slug = "conflict"
