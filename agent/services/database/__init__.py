"""Database containers: provisioning, backup, listing and restore (commands.md 2.9)."""

from agent.services.database.service import DatabaseService

__all__ = ["DatabaseService"]
