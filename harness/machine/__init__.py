"""What the machine is and what it can do: host facts for receipts, measured read bandwidth, kernel speeds."""
