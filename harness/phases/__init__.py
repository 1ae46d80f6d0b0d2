"""The timed phases: probe (1), timing (2), benchmark (3); each returns a receipt section."""
