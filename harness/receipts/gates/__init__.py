"""The verifier's gates, one function each, grouped by what they look at; harness.receipts.verify runs
them."""
