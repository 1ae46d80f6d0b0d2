"""One module per `bitnet-harness` command: parse the options, call the work, render the result."""
