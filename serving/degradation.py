"""How the service degrades when a backend fails: never a 500, never an acknowledgement
without a record.

A backend that cannot be reached (Redis for the shared feature state, the prediction log's
database or disk, the registry) makes the requests that need it answer 503 with the reason,
and `/ready` false with the reason until the backend answers again; the loaded model keeps
serving whatever the registry does. docs/serving.md "When a backend fails" has the table.
"""

from __future__ import annotations


class BackendUnavailableError(RuntimeError):
    """A backend the request needs did not answer. The 503 a client gets says `the {backend}
    {state}`; the reason (`str(e)`, with the backend's address) goes to the log and /ready."""

    def __init__(self, backend: str, reason: str, state: str = "is unavailable") -> None:
        self.backend = backend
        self.state = state
        super().__init__(reason)


class RegistryUnavailableError(BackendUnavailableError):
    """The model registry did not answer a reload: the loaded model keeps serving."""

    def __init__(self, reason: str) -> None:
        super().__init__("registry", reason)
