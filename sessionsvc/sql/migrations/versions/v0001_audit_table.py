"""The audit table and the indexes of its queries.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessionsvc_audit",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=True),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(), nullable=True),
        sa.Column("detail", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
    op.create_index("sessionsvc_audit_at", "sessionsvc_audit", ["at", "id"])
    for name, column in (
        ("user", "user_id"),
        ("session", "session_id"),
        ("type", "type"),
        ("ip", "ip"),
    ):
        op.create_index(f"sessionsvc_audit_{name}", "sessionsvc_audit", [column, "at", "id"])


def downgrade() -> None:
    op.drop_table("sessionsvc_audit")
