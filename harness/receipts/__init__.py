"""Receipts: the schema, digests and summary math, building, reading and writing, verification, signatures."""
