"""Alembic revisions (one file each; alembic skips this __init__)."""
