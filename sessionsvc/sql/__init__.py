"""The audit trail's SQL database: its schema, its migrations and its writes.

The only package that imports SQLAlchemy and Alembic (the ``audit`` extra),
so an install without them runs everything else.
"""
