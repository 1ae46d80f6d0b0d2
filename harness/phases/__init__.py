"""The timed phases, probe (1), timing (2) and benchmark (3), each returning a receipt section; what they run
on (workload) and the one way a model is loaded and warmed up (load)."""
