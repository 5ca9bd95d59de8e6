"""Guest conversion inside the libguestfs appliance (one launch per job).

``vm2kvmd.adapters.appliance`` starts the appliance on the job's overlays;
``inspect`` reads the guest into a ``core.guest.info.GuestInfo``; the Linux step modules (``linux/``)
(``tools``, ``devices``, ``initramfs``, ``network``, ``xorg``, ``selinux``,
``agent``) each make one kind of edit through a ``GuestContext`` and record
``Change``s; ``linux.convert_linux`` runs them in order.  The text edits
themselves are pure functions in ``vm2kvmd.core.guest.linux`` so they are tested
without an appliance.
"""
