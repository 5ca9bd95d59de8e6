"""Helpers shared by the test suite (disk factories, checksums)."""
