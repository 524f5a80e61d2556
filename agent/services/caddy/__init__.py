"""The managed Caddy reverse proxy: domains, TLS, traffic switches (commands.md 2.6)."""

from agent.services.caddy.service import CaddyService

__all__ = ["CaddyService"]
