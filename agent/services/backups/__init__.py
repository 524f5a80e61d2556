"""Backup operations: upload to the control plane, schedules, retention, storage paths
(commands.md 2.9.4, 2.9.5)."""

from agent.services.backups.service import BackupsService

__all__ = ["BackupsService"]
