"""The ``service.*`` commands over the engine adapter (agent.services.docker): lifecycle,
delete, logs and log streams, stats (docs/commands.md, "Lifecycle" and "Logs")."""
