"""agreement checks and prompt sets: a data owner's unlabelled prompts, scored on an emulator and the full model
or used to calibrate one

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agreement_check",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=True),
        sa.Column("emulator_id", sa.String(length=40), nullable=False),
        sa.Column("n_prompts", sa.Integer(), nullable=False),
        sa.Column("prompts_sha256", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("result_json", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["emulator_id"], ["emulator.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["owner_id"], ["owner.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("agreement_check", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agreement_check_emulator_id"), ["emulator_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_agreement_check_owner_id"), ["owner_id"], unique=False)
    op.create_table(
        "prompt_set",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("n_prompts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owner.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("prompt_set", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prompt_set_owner_id"), ["owner_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prompt_set", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_set_owner_id"))
    op.drop_table("prompt_set")
    with op.batch_alter_table("agreement_check", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreement_check_owner_id"))
        batch_op.drop_index(batch_op.f("ix_agreement_check_emulator_id"))
    op.drop_table("agreement_check")
