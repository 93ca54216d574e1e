"""indexes of the batch page (a batch's jobs in order, its counts, failed first) and of the jobs list sorted by run time

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 15:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


# Plain op.create_index, not batch_alter_table: a batch operation that rebuilt 'jobs' on SQLite would drop
# the job count triggers of 0004 (and SQLite cannot reflect the expression index to rebuild it).
def upgrade() -> None:
    op.drop_index('ix_jobs_batch_id', table_name='jobs')
    op.create_index('ix_jobs_batch_created', 'jobs', ['batch_id', 'timestamp_created_sec', 'job_id'], unique=False)
    op.create_index('ix_jobs_batch_status', 'jobs', ['batch_id', 'status', 'timestamp_created_sec', 'job_id'], unique=False)
    op.create_index('ix_jobs_run_time', 'jobs', [sa.text('(timestamp_finished_sec - timestamp_started_sec)'), 'job_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_run_time', table_name='jobs')
    op.drop_index('ix_jobs_batch_status', table_name='jobs')
    op.drop_index('ix_jobs_batch_created', table_name='jobs')
    op.create_index('ix_jobs_batch_id', 'jobs', ['batch_id'], unique=False)
