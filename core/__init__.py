"""What every package shares: the error hierarchy (one base error, a few kinds, one-line messages)."""
