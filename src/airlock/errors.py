"""The error tree. Every error a user can see is an AirlockError with a hint.

    AirlockError                      exit 1: something failed
    ├── UsageError                    exit 2: the command line or input is wrong
    │   └── SpecError                 a spec field is wrong (file, line, field)
    ├── FetchError                    a download failed (URL named)
    │   └── RegistryError             an OCI registry answered an error (reference named)
    ├── SystemCommandError            an external command failed (command and output named)
    ├── NodeError                     a host change could not be planned or applied
    └── VerificationError             exit 3: a digest, a signature or a volume is wrong
        └── DigestMismatch            bytes do not match their digest

Each class has a stable `code` (SPEC_INVALID, VERIFICATION_FAILED, ...): the `error.code` of the
one JSON document a command prints with --json, for scripts to switch on.

Third-party exceptions are translated at the boundary (`raise X(...) from exc`); the CLI has one
handler that maps these to exit codes and prints message and hint (traceback only with --debug).
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_VERIFY",
    "AirlockError",
    "DigestMismatch",
    "FetchError",
    "NodeError",
    "RegistryError",
    "SpecError",
    "SystemCommandError",
    "UsageError",
    "VerificationError",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3


class AirlockError(Exception):
    """A failure the user can act on: what failed, and a hint on what to do."""

    exit_code = EXIT_FAILED
    code = "FAILED"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(AirlockError):
    exit_code = EXIT_USAGE
    code = "USAGE"


class SpecError(UsageError):
    """One or more spec fields are wrong; each problem names file, line and field."""

    code = "SPEC_INVALID"

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = problems
        super().__init__("invalid spec:\n  " + "\n  ".join(problems), hint)


class FetchError(AirlockError):
    code = "FETCH_FAILED"


class RegistryError(FetchError):
    code = "REGISTRY_ERROR"


class SystemCommandError(AirlockError):
    code = "COMMAND_FAILED"


class NodeError(AirlockError):
    code = "NODE_FAILED"


class VerificationError(AirlockError):
    exit_code = EXIT_VERIFY
    code = "VERIFICATION_FAILED"


class DigestMismatch(VerificationError):
    code = "DIGEST_MISMATCH"

    def __init__(self, what: str, expected: str, actual: str, hint: str | None = None) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"digest mismatch for {what}: expected {expected}, got {actual}",
            hint or "the bytes were changed or corrupted; fetch or copy them again",
        )
