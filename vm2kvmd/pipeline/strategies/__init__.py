"""How a migration's disks are carried over: the disk strategies of ``pipeline.engine``.

* ``flatten`` (``--snapshots flatten``, the default): one volume per disk,
  the current state of its chain, copied through a qcow2 overlay that the
  guest conversion and the ``before_copy`` hooks write into;
* ``keep`` (``--snapshots keep``): one qcow2 volume per VMDK layer, every
  VMware snapshot as libvirt snapshot metadata.

``base`` holds what both share: one migration's context (``Migration``) and the
``DiskStrategy`` protocol the engine drives.
"""
