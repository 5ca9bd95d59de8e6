"""Windows guest conversion inside the libguestfs appliance (issue 13): applies the edits planned
in ``vm2kvmd.core.guest.windows`` (drivers, registry, VMware Tools removal) through a
``GuestContext``."""
