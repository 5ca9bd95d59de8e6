"""The pure core: VMware and OVF formats parsed from text or bytes, the hardware model, planning
(device mapping), domain XML rendering, guest edit planning and the migration report.

Nothing here touches the file system, a process, libvirt, libguestfs or the network: readers take
text or bytes, and anything that must look at files is injected (``vm2kvmd.sources`` does that).
"""
