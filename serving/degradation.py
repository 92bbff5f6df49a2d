"""How the service degrades when a backend fails: never a 500, never an acknowledgement
without a record.

A backend that cannot be reached (Redis for the shared feature state, the prediction log's
database or disk, the registry) makes the requests that need it answer 503 with the reason,
and `/ready` false with the reason until the backend answers again; the loaded model keeps
serving whatever the registry does. docs/serving.md "When a backend fails" has the table.
"""

from __future__ import annotations


class BackendUnavailableError(RuntimeError):
    """A backend the request needs did not answer; `backend` names it for the 503's reason."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        super().__init__(reason)


class RegistryUnavailableError(BackendUnavailableError):
    """The model registry did not answer a reload: the loaded model keeps serving."""

    def __init__(self, reason: str) -> None:
        super().__init__("registry", reason)
