"""The managed Caddy reverse proxy: domains, TLS, traffic switches (docs/commands.md, "Domains and the proxy")."""

from agent.services.caddy.service import CaddyService

__all__ = ["CaddyService"]
