"""Test guests: the Debian 12 VMware-style guest, phony guest images, and boot-and-probe."""
