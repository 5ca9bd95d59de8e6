"""Planning: ``SourceVM`` + caller options + ``GuestCaps`` -> ``DomainPlan`` (what every device
becomes on KVM), how QEMU reads each source disk, and how kept snapshots become volumes."""
