"""Other implementations run on the same file: upstream llama.cpp for parity and for speed ratios."""
