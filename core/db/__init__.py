"""Database access shared by every package: the ORM base, engines, sessions, embedded PostgreSQL."""
