"""vm2kvm: migrate VMware virtual machines into libvirt/KVM guests."""

__version__ = "0.1.0"
