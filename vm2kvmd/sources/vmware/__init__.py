"""A VMware VM read from the host's files: its ``.vmx``, the VMDK chains it names and its ``.vmsd``."""
