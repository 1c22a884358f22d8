"""The settings of the SQLite adapters: where the outbox and the job memory live, how big."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from python_worker.adapters.sqlite.preflight import OutboxPreflight


class SqliteSettings(BaseSettings):
    """The local, durable state: the status outbox and the memory of recent jobs.

    Mixed into the worker's `Settings` (bootstrap); each field's `examples[0]` is the good value
    shown when a bad one stops start-up.
    """

    status_outbox_dir: Path = Field(
        Path("status-outbox"),
        description="where undelivered status updates are kept durably",
        examples=["/var/lib/python-worker/outbox"],
    )
    job_memory_dir: Path | None = Field(
        None,
        description="where the memory of recent jobs is kept; default STATUS_OUTBOX_DIR",
        examples=["/var/lib/python-worker"],
    )
    status_outbox_max_items: int = Field(
        100_000,
        ge=100,
        description="outbox bound; when it is full the worker stops taking new jobs",
        examples=[100000],
    )
    job_memory_size: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="recent jobs remembered on disk (redeliveries, crash loops); see Guarantees",
        examples=[100000],
    )

    def sqlite_preflights(self) -> list[OutboxPreflight]:
        """`check`'s look at the outbox directory."""
        return [OutboxPreflight(self.status_outbox_dir, self.status_outbox_max_items)]

    @property
    def job_memory_directory(self) -> Path:
        """JOB_MEMORY_DIR, or STATUS_OUTBOX_DIR when it is unset."""
        return self.job_memory_dir or self.status_outbox_dir
