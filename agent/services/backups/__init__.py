"""Backup operations: upload to the control plane, schedules, retention, storage paths
(docs/commands.md, "Databases")."""

from agent.services.backups.service import BackupsService

__all__ = ["BackupsService"]
