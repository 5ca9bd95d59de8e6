"""The end-to-end tests' fixtures (one real vm2kvmd per module) for the vSphere migrations."""

from tests.e2e.conftest import daemon

__all__ = ["daemon"]
