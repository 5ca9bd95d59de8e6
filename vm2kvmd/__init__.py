"""vm2kvm: migrate VMware virtual machines into libvirt/KVM guests."""

# The only place the version is written: pyproject.toml reads it from here
# ([tool.setuptools.dynamic]), vm2kvmd --version, vm2kvmctl --version and the
# Manager's Version property import it.
__version__ = "0.1.0"
