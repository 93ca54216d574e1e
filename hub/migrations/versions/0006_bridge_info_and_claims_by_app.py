"""compute clients' bridge info (host, backend, container mode, apps, version); an index for claims by app

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('compute_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bridge_info', sa.JSON(), nullable=True))
    op.create_index(
        'ix_jobs_claimable_app', 'jobs',
        ['status', 'is_runnable', 'service_name', 'app_name', 'timestamp_created_sec', 'job_id'], unique=False,
    )


def downgrade() -> None:
    op.drop_index('ix_jobs_claimable_app', table_name='jobs')
    with op.batch_alter_table('compute_clients', schema=None) as batch_op:
        batch_op.drop_column('bridge_info')
