"""The data engine."""
