"""vm2kvmctl: the command-line client of vm2kvmd."""
