"""drop ix_jobs_user_id: ix_jobs_user_created and ix_jobs_user_status begin with user_id and serve every
filter on it, so the third index only cost each job's insert and delete an index update

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:30:00
"""
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_jobs_user_id', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_user_id', 'jobs', ['user_id'], unique=False)
