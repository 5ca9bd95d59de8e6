"""Sources on ESXi/vCenter (issue 12): a VM found through a vSphere session, read into a
``SourceVM`` (``vm2kvmd.core.vsphere``) and its disks read over the datastore HTTP interface."""
