"""The development control plane: CA, enrollment API, challenge auth, call API, console."""
