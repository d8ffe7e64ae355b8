"""How a migration ends early: one exception the engine turns into the run's outcome."""

from __future__ import annotations


class MigrationFailed(Exception):
    """Ends a migration as failed (or cancelled); the message goes into the record."""

    def __init__(self, message: str, outcome: str = "failed") -> None:
        super().__init__(message)
        self.outcome = outcome
