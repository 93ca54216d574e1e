"""SQLAlchemy tables of the hub. Changes here need an Alembic migration (hub/migrations)."""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    user_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_sec: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    __tablename__ = "api_keys"
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_sec: Mapped[float] = mapped_column(Float)
    last_used_sec: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Service(Base):
    __tablename__ = "services"
    service_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner_user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), index=True)
    created_sec: Mapped[float] = mapped_column(Float)


class ServiceUser(Base):
    __tablename__ = "service_users"
    service_name: Mapped[str] = mapped_column(
        ForeignKey("services.service_name", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True, index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    create_jobs: Mapped[bool] = mapped_column(Boolean, default=False)
    process_jobs: Mapped[bool] = mapped_column(Boolean, default=False)


class ServiceApp(Base):
    __tablename__ = "service_apps"
    service_name: Mapped[str] = mapped_column(
        ForeignKey("services.service_name", ondelete="CASCADE"), primary_key=True
    )
    app_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_sec: Mapped[float] = mapped_column(Float)
    updated_sec: Mapped[float] = mapped_column(Float)


class ComputeClient(Base):
    __tablename__ = "compute_clients"
    compute_client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service_name: Mapped[str] = mapped_column(ForeignKey("services.service_name", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), index=True)
    label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    private_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    compute_slots: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_sec: Mapped[float] = mapped_column(Float)
    last_active_sec: Mapped[Optional[float]] = mapped_column(Float, nullable=True, index=True)
    # where and how its bridge runs, as the bridge last reported it (pairio.models.PairioBridgeInfo)
    bridge_info: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service_name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(100))  # filtered through ix_jobs_user_created and ix_jobs_user_status
    batch_id: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    app_name: Mapped[str] = mapped_column(String(100))
    processor_name: Mapped[str] = mapped_column(String(100))
    job_definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    job_definition_hash: Mapped[str] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(JSON)
    num_cpus: Mapped[int] = mapped_column(Integer)
    num_gpus: Mapped[int] = mapped_column(Integer)
    memory_gb: Mapped[float] = mapped_column(Float)
    time_sec: Mapped[float] = mapped_column(Float)
    target_compute_client_ids: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    secrets: Mapped[Optional[list[dict[str, str]]]] = mapped_column(JSON, nullable=True)
    console_output_url: Mapped[str] = mapped_column(Text)
    resource_utilization_log_url: Mapped[str] = mapped_column(Text)
    timestamp_created_sec: Mapped[float] = mapped_column(Float)
    timestamp_starting_sec: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    timestamp_started_sec: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    timestamp_finished_sec: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    canceled: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_by_user_id: Mapped[Optional[str]] = mapped_column(String(100), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    is_runnable: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    compute_client_id: Mapped[Optional[str]] = mapped_column(String(40), nullable=True)
    compute_client_name: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    compute_client_user_id: Mapped[Optional[str]] = mapped_column(String(100), nullable=True)
    image_uri: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    # the resolved digest of the image a container-mode bridge ran (reported with the final status)
    image_digest: Mapped[Optional[str]] = mapped_column(String(300), nullable=True)
    job_private_key_hash: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, unique=True)
    console_output_size: Mapped[int] = mapped_column(Integer, default=0)
    has_resource_utilization_log: Mapped[bool] = mapped_column(Boolean, default=False)
    # Secrets are masked before console output is stored (hub/core/job_secrets.py): the raw
    # bytes received (the bridge's offsets) and the masker's held-back bytes between uploads.
    console_input_size: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    console_pending: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)
    # the processor's secret parameters when the job was created: masked in every user-facing answer
    secret_parameter_names: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        Index("ix_jobs_service_hash_created", "service_name", "job_definition_hash", "timestamp_created_sec"),
        # claims walk it in order (oldest first) without sorting the pending jobs
        Index("ix_jobs_claimable", "status", "is_runnable", "service_name", "timestamp_created_sec", "job_id"),
        # claims of a bridge that runs some apps only: one walk per app, in order (hub/core/claim_scope.py)
        Index("ix_jobs_claimable_app", "status", "is_runnable", "service_name", "app_name", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_compute_client_status", "compute_client_id", "status"),
        Index("ix_jobs_service_created", "service_name", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_service_app_processor", "service_name", "app_name", "processor_name"),
        # The jobs page: newest first, unfiltered or by one filter, and its counts per status
        Index("ix_jobs_created", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_status_created", "status", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_user_created", "user_id", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_compute_client_created", "compute_client_id", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_app_processor_created", "app_name", "processor_name", "timestamp_created_sec", "job_id"),
        # counts per status of a service or user, and their pages filtered by status, in order
        Index("ix_jobs_service_status", "service_name", "status", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_user_status", "user_id", "status", "timestamp_created_sec", "job_id"),
        # a batch's page: its jobs in order, its counts per status and its failed jobs first
        Index("ix_jobs_batch_created", "batch_id", "timestamp_created_sec", "job_id"),
        Index("ix_jobs_batch_status", "batch_id", "status", "timestamp_created_sec", "job_id"),
    )


# the jobs list sorted by how long jobs ran (hub/core/job_sort.py queries this very expression)
Index("ix_jobs_run_time", Job.timestamp_finished_sec - Job.timestamp_started_sec, Job.job_id)


class ConsoleMask(Base):
    """Keyed digests of a finished job's secret values, to mask its late uploads (hub/core/job_secrets.py)."""

    __tablename__ = "console_masks"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128))
    digests: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    expires_sec: Mapped[float] = mapped_column(Float, index=True)


class JobTag(Base):
    __tablename__ = "job_tags"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)
    # the job's timestamp_created_sec: a tag's jobs are paged newest first from the index alone
    timestamp_created_sec: Mapped[float] = mapped_column(Float, server_default="0")

    __table_args__ = (Index("ix_job_tags_tag_created", "tag", "timestamp_created_sec", "job_id"),)


class JobCount(Base):
    """Jobs per service and status, folded from ``job_count_changes`` (hub/core/job_counts.py)."""

    __tablename__ = "job_counts"
    service_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


class JobCountChange(Base):
    """+1/-1 per job and status, written by database triggers on ``jobs`` in the same transaction.

    Appending (rather than updating one counter row) keeps concurrent transactions from
    locking each other; the housekeeping loop folds the changes into ``job_counts``.
    """

    __tablename__ = "job_count_changes"
    change_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    delta: Mapped[int] = mapped_column(Integer)


class JobDependency(Base):
    __tablename__ = "job_dependencies"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    depends_on_job_id: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)


class JobInput(Base):
    __tablename__ = "job_inputs"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    # URLs may be longer than a btree index row allows; look them up by their hash
    url_hash: Mapped[str] = mapped_column(String(64), index=True)


class JobOutput(Base):
    __tablename__ = "job_outputs"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    file_base_name: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    url_hash: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True)
    timestamp_sec: Mapped[float] = mapped_column(Float)
    status: Mapped[Optional[str]] = mapped_column(String(20), nullable=True)
    message: Mapped[str] = mapped_column(Text)


class DeletedJob(Base):
    """What remains of a deleted job: enough for the consumed/provided statistics."""

    __tablename__ = "deleted_jobs"
    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(100), index=True)
    compute_client_user_id: Mapped[Optional[str]] = mapped_column(String(100), nullable=True, index=True)
    num_cpus: Mapped[int] = mapped_column(Integer)
    num_gpus: Mapped[int] = mapped_column(Integer)
    memory_gb: Mapped[float] = mapped_column(Float)
    timestamp_started_sec: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    timestamp_finished_sec: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    timestamp_deleted_sec: Mapped[float] = mapped_column(Float)


class UiSession(Base):
    """A web UI login: the browser's cookie holds a random token, the hub keeps only its hash."""

    __tablename__ = "ui_sessions"
    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    # the key the user logged in with: revoking it ends the session
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.key_id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_sec: Mapped[float] = mapped_column(Float)
    expires_sec: Mapped[float] = mapped_column(Float, index=True)
