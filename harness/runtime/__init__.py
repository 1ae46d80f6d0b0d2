"""The process around a command: resource limits (--max-memory, --timeout) and Ctrl-C handling."""
