"""Runs of the engine that a command asks for, free of the command line: a benchmark request and its session,
interleaved A/B rounds, the replay of a receipt."""
