// The options form's pure parts: what the user chose -> what Migrate takes.

// "VMWARE=TARGET" entries of one kind (network or bridge) from the per-network choices.
export function mappings(choices, kind) {
    return Object.entries(choices)
            .filter(([, to]) => to.startsWith(`${kind}:`))
            .map(([from, to]) => `${from}=${to.slice(kind.length + 1)}`);
}

// The VMware networks of the VM, each once, in device order.
export function vmwareNetworks(result) {
    const seen = [];
    for (const nic of result.nics || []) {
        if (nic.network && !seen.includes(nic.network))
            seen.push(nic.network);
    }
    return seen;
}
