"""Pytest fixtures for real guests; a plugin registered in ``tests/conftest.py``.

``debian12_guest`` (session): the ``DebianGuest`` from ``build_debian12``,
built into ``build/guests/`` on first use (minutes; cached across sessions).
A test that uses it should carry ``@pytest.mark.timeout(GUEST_BUILD_TIMEOUT)``
so a cold build does not hit the suite's 300 s default.
"""

from __future__ import annotations

import pytest

from testbed.guests.debian12 import DEFAULT_CACHE_ROOT, DebianGuest, build_debian12

# A cold build: debootstrap about 2 min, the image about 1.5 min, plus slack for a loaded machine.
GUEST_BUILD_TIMEOUT = 900


@pytest.fixture(scope="session")
def debian12_guest() -> DebianGuest:
    """The read-only Debian 12 VMware VM (``.vmx``, split VMDK) of ``testbed.guests.debian12``."""
    return build_debian12(DEFAULT_CACHE_ROOT)
