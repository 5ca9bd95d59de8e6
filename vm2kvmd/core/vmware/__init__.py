"""VMware file formats: ``.vmx`` (keys, devices, storage), VMDK descriptors and sparse headers,
``.vmsd`` snapshot databases, ``[datastore] path`` names; and a parsed VMX turned into a ``SourceVM``."""
