"""Datasets: in-memory image sets, MVTec-layout folders, magnetic tiles, the synthetic line."""
