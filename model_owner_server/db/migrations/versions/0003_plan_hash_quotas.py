"""emulator plan hash (equivalent requests answered by one emulator) and what the per-owner quotas count:
the owner who queued a job and the bytes each upload keeps in the store

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# rows from before this revision stored their uploads without counting them: 0 (their files are not re-read)
STORED = ("evaluation", "agreement_check", "prompt_set")


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_job_owner_id"), ["owner_id"], unique=False)
    with op.batch_alter_table("emulator", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_emulator_plan_sha256"), ["plan_sha256"], unique=True)
    for table in STORED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("stored_bytes", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in reversed(STORED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("stored_bytes")
    with op.batch_alter_table("emulator", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_emulator_plan_sha256"))
        batch_op.drop_column("plan_sha256")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_owner_id"))
        batch_op.drop_column("owner_id")
