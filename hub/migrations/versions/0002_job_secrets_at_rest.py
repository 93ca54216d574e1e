"""secrets at rest: console masking state, secret parameter names, keyed digests for late uploads

Also erases what existing finished jobs still hold: secret values (names are kept)
and the values of their secret parameters, and records which parameters are secret.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 06:00:00
"""
import json

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

TERMINAL = ('completed', 'failed')


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('console_input_size', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('console_pending', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('secret_parameter_names', sa.JSON(), nullable=True))

    op.create_table('console_masks',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('digests', sa.JSON(), nullable=False),
    sa.Column('expires_sec', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.job_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('console_masks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_masks_expires_sec'), ['expires_sec'], unique=False)

    _migrate_rows(op.get_bind())


def _migrate_rows(conn: sa.Connection) -> None:
    jobs = sa.table(
        'jobs', sa.column('job_id', sa.String), sa.column('service_name', sa.String), sa.column('app_name', sa.String),
        sa.column('processor_name', sa.String), sa.column('status', sa.String), sa.column('secrets', sa.JSON),
        sa.column('job_definition', sa.JSON), sa.column('secret_parameter_names', sa.JSON),
        sa.column('console_output_size', sa.Integer), sa.column('console_input_size', sa.Integer),
    )
    apps = sa.table('service_apps', sa.column('service_name', sa.String), sa.column('app_name', sa.String), sa.column('spec', sa.JSON))
    # Stored console output was never masked, so the bridge's offsets are its size.
    conn.execute(sa.update(jobs).values(console_input_size=jobs.c.console_output_size))
    for service, app, spec in conn.execute(sa.select(apps.c.service_name, apps.c.app_name, apps.c.spec)).all():
        spec = json.loads(spec) if isinstance(spec, str) else spec
        for processor in spec.get('processors', []):
            names = [p['name'] for p in processor.get('parameters', []) if p.get('secret')]
            if names:
                conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.service_name == service, jobs.c.app_name == app, jobs.c.processor_name == processor['name'])
                    .values(secret_parameter_names=names)
                )
    finished = conn.execute(
        sa.select(jobs.c.job_id, jobs.c.secrets, jobs.c.job_definition, jobs.c.secret_parameter_names)
        .where(jobs.c.status.in_(TERMINAL), sa.or_(jobs.c.secrets.is_not(None), jobs.c.secret_parameter_names.is_not(None)))
    ).all()
    for job_id, secrets, definition, names in finished:
        secrets = json.loads(secrets) if isinstance(secrets, str) else secrets
        definition = json.loads(definition) if isinstance(definition, str) else definition
        names = set((json.loads(names) if isinstance(names, str) else names) or [])
        params = [{**p, 'value': None} if p.get('name') in names else p for p in definition.get('parameters', [])]
        conn.execute(
            sa.update(jobs).where(jobs.c.job_id == job_id).values(
                secrets=[{'name': x['name']} for x in secrets] if secrets else None,
                job_definition={**definition, 'parameters': params},
            )
        )


def downgrade() -> None:
    with op.batch_alter_table('console_masks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_masks_expires_sec'))
    op.drop_table('console_masks')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('secret_parameter_names')
        batch_op.drop_column('console_pending')
        batch_op.drop_column('console_input_size')
