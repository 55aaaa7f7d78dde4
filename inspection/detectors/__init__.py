"""Detectors: one module per detector, one explicit registry key each (see ``registry``)."""
