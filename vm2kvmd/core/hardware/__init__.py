"""The hardware model of a source VM (``SourceVM``, its disks, NICs, ports ...): frozen dataclasses
that every source reader (VMX, OVF, vSphere) builds and the planning consumes."""
