"""Windows guests (issue 13): registry edits (hives as data), driver selection and first-boot
scripts, planned as pure values like ``core.guest.linux``.  The appliance side is
``vm2kvmd.convert.windows``."""
