"""Database containers: provisioning, backup, listing and restore (docs/commands.md, "Databases")."""

from agent.services.database.service import DatabaseService

__all__ = ["DatabaseService"]
