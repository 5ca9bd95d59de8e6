"""Real services and guests for the tests, the demo and the benchmarks (not installed).

A private dbus-daemon (``bus``), libvirtd with storage pools and networks (``services``), child
processes that die with us (``processes``), raw disk images (``disks``), and test guests
(``guests``): the Debian 12 VMware-style guest built with debootstrap, phony guest images for the
conversion steps, and booting a migrated domain to probe it.  ``tests/`` and ``scripts/demo.py``
and ``bench/`` import it; it imports nothing from ``tests/``.
"""
