"""vSphere API objects (a VM's ``config.hardware`` as plain values, not pyvmomi objects) turned
into a ``SourceVM``: the pure side of ESXi/vCenter sources (issue 12).  Talking to vSphere
lives in ``vm2kvmd.adapters`` (the session) and ``vm2kvmd.sources.vsphere`` (the loader)."""
