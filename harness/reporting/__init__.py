"""Human-readable views of receipts and comparisons."""
