"""Benchmarks: every speed and accuracy number the project reports comes from here."""
