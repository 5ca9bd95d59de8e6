"""Linux guests: VMware Tools removal, virtio in the initramfs, device names, NIC names, X and
modprobe files, the guest agent, and which devices the booting kernel drives."""
