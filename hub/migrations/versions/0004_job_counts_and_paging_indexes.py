"""job counts kept by triggers; indexes that page claims, statuses and tags in order

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 12:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = [
    """CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_count_changes (service_name, status, delta) VALUES (NEW.service_name, NEW.status, 1);
    END""",
    """CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
        INSERT INTO job_count_changes (service_name, status, delta) VALUES (OLD.service_name, OLD.status, -1);
    END""",
    """CREATE TRIGGER job_counts_update AFTER UPDATE OF status, service_name ON jobs
    WHEN OLD.status IS NOT NEW.status OR OLD.service_name IS NOT NEW.service_name BEGIN
        INSERT INTO job_count_changes (service_name, status, delta) VALUES (OLD.service_name, OLD.status, -1);
        INSERT INTO job_count_changes (service_name, status, delta) VALUES (NEW.service_name, NEW.status, 1);
    END""",
]
POSTGRES_TRIGGERS = [
    """CREATE FUNCTION pairio_job_count_changes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status
                AND OLD.service_name IS NOT DISTINCT FROM NEW.service_name THEN
            RETURN NULL;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            INSERT INTO job_count_changes (service_name, status, delta) VALUES (OLD.service_name, OLD.status, -1);
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            INSERT INTO job_count_changes (service_name, status, delta) VALUES (NEW.service_name, NEW.status, 1);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER job_counts_change AFTER INSERT OR DELETE OR UPDATE OF status, service_name ON jobs
    FOR EACH ROW EXECUTE FUNCTION pairio_job_count_changes()""",
]


def upgrade() -> None:
    op.create_table(
        'job_counts',
        sa.Column('service_name', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('service_name', 'status'),
    )
    op.create_table(
        'job_count_changes',
        sa.Column('change_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('service_name', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('delta', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('change_id'),
    )

    with op.batch_alter_table('job_tags', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timestamp_created_sec', sa.Float(), server_default='0', nullable=False))
    op.execute(
        "UPDATE job_tags SET timestamp_created_sec = "
        "(SELECT jobs.timestamp_created_sec FROM jobs WHERE jobs.job_id = job_tags.job_id)"
    )
    with op.batch_alter_table('job_tags', schema=None) as batch_op:
        batch_op.drop_index('ix_job_tags_tag_job')
        batch_op.create_index('ix_job_tags_tag_created', ['tag', 'timestamp_created_sec', 'job_id'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_claimable')
        batch_op.drop_index('ix_jobs_service_status')
        batch_op.drop_index('ix_jobs_user_status')
        batch_op.create_index('ix_jobs_claimable', ['status', 'is_runnable', 'service_name', 'timestamp_created_sec', 'job_id'], unique=False)
        batch_op.create_index('ix_jobs_service_status', ['service_name', 'status', 'timestamp_created_sec', 'job_id'], unique=False)
        batch_op.create_index('ix_jobs_user_status', ['user_id', 'status', 'timestamp_created_sec', 'job_id'], unique=False)

    # last: a batch operation that rebuilt 'jobs' would drop its triggers
    op.execute("INSERT INTO job_counts (service_name, status, n) SELECT service_name, status, COUNT(*) FROM jobs GROUP BY service_name, status")
    for sql in (POSTGRES_TRIGGERS if op.get_bind().dialect.name == 'postgresql' else SQLITE_TRIGGERS):
        op.execute(sql)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_user_status')
        batch_op.drop_index('ix_jobs_service_status')
        batch_op.drop_index('ix_jobs_claimable')
        batch_op.create_index('ix_jobs_user_status', ['user_id', 'status'], unique=False)
        batch_op.create_index('ix_jobs_service_status', ['service_name', 'status'], unique=False)
        batch_op.create_index('ix_jobs_claimable', ['status', 'is_runnable', 'service_name', 'timestamp_created_sec'], unique=False)
    with op.batch_alter_table('job_tags', schema=None) as batch_op:
        batch_op.drop_index('ix_job_tags_tag_created')
        batch_op.create_index('ix_job_tags_tag_job', ['tag', 'job_id'], unique=False)
        batch_op.drop_column('timestamp_created_sec')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER job_counts_change ON jobs")
        op.execute("DROP FUNCTION pairio_job_count_changes()")
    else:
        for name in ('job_counts_insert', 'job_counts_delete', 'job_counts_update'):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table('job_count_changes')
    op.drop_table('job_counts')
