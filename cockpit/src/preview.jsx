import React from 'react';
import { ExpandableSection, List, ListItem, Title } from '@patternfly/react-core';
import { Table, Thead, Tr, Th, Tbody, Td } from '@patternfly/react-table';

import { bytes } from './format.js';

const DROPPED = 'dropped';

function diskRow(d) {
    const t = d.target;
    let target = DROPPED;
    // A planned disk with a problem text is one read later (on a vSphere datastore, compressed in
    // an OVA), as vm2kvmctl shows it; only a disk without a plan is not migrated.
    if (t)
        target = `${t.dev} (${t.bus}), ${t.format}${t.path ? `, ${t.path}` : t.volume ? `, volume ${t.volume}` : ''}`;
    else if (d.problem)
        target = `not migrated: ${d.problem}`;
    const remote = d.remote ? ', read over HTTPS' : '';
    return { key: `disk:${d.key}`, item: `Disk ${d.key}`, source: `${d.file}${d.virtual_size ? `, ${bytes(d.virtual_size)}` : ''}${remote}`, target };
}

function removableRow(kind, d) {
    const t = d.target;
    return {
        key: `${kind.toLowerCase()}:${d.key}`,
        item: `${kind} ${d.key}`,
        source: d.kind === 'empty' ? 'empty' : `${d.kind} ${d.file || ''}`.trim(),
        target: t ? `${t.dev} (${t.bus})${t.path ? `, ${t.path}` : ''}` : DROPPED,
    };
}

function nicRow(n) {
    const t = n.target;
    return {
        key: `nic:${n.key}`,
        item: `Network adapter ${n.key}`,
        source: `${n.model || ''} on ${n.network || n.connection_type || 'no network'}${n.mac ? `, ${n.mac}` : ''}`,
        target: t ? `${t.model} on ${t.kind} ${t.name}${t.mac ? `, ${t.mac}` : ''}` : DROPPED,
    };
}

function portRow(kind, p) {
    const m = p.mapped;
    return {
        key: p.key,
        item: `${kind} ${p.key}`,
        source: `${p.kind}${p.target ? ` ${p.target}` : ''}`,
        target: m ? [m.type, m.path || '', m.host ? `${m.host}:${m.port}` : ''].filter(Boolean).join(' ') : DROPPED,
    };
}

// What the VM has and what each device becomes, from Inspect's JSON (docs/dbus-api.md).
export function hardwareRows(r) {
    const rows = [
        { key: 'name', item: 'Name', source: r.display_name || '', target: r.name },
        // osinfo: the libosinfo id the domain's metadata will carry (null when none fits)
        { key: 'guest-os', item: 'Guest OS', source: r.guest_os || '', target: r.osinfo || '—' },
        { key: 'firmware', item: 'Firmware', source: r.firmware, target: `${r.firmware}${r.secure_boot ? ' with Secure Boot' : ''}, machine ${r.machine}` },
        { key: 'cpus', item: 'CPUs', source: `${r.cpu.vcpus} (${r.cpu.cores_per_socket || 1} per socket)`, target: `${r.cpu.sockets} sockets × ${r.cpu.cores} cores × ${r.cpu.threads} threads` },
        { key: 'memory', item: 'Memory', source: `${r.memory.size_mib} MiB`, target: `${r.memory.size_mib} MiB` },
    ];
    for (const d of r.disks || [])
        rows.push(diskRow(d));
    for (const d of r.cdroms || [])
        rows.push(removableRow('CD-ROM', d));
    for (const d of r.floppies || [])
        rows.push(removableRow('Floppy', d));
    for (const n of r.nics || [])
        rows.push(nicRow(n));
    for (const p of r.serials || [])
        rows.push(portRow('Serial port', p));
    for (const p of r.parallels || [])
        rows.push(portRow('Parallel port', p));
    if (r.video)
        rows.push({ key: 'video', item: 'Video', source: `${r.video.vram_kib || 0} KiB, ${r.video.displays || 1} display(s)`, target: r.video.target_model || DROPPED });
    if (r.sound)
        rows.push({ key: 'sound', item: 'Sound', source: r.sound.model || '', target: r.sound.target_model || DROPPED });
    if (r.graphics && r.graphics.kind)
        rows.push({ key: 'graphics', item: 'Graphics', source: `VNC${r.graphics.vnc_port ? ` port ${r.graphics.vnc_port}` : ''}`, target: r.graphics.kind });
    return rows;
}

export function Preview({ result }) {
    return (
        <div id="preview">
            <Title headingLevel="h2">{result.display_name || result.name}</Title>
            {result.annotation && <p id="preview-annotation">{result.annotation}</p>}
            <Table aria-label="Hardware" id="preview-hardware" variant="compact">
                <Thead>
                    <Tr><Th>Device</Th><Th>VMware</Th><Th>Becomes</Th></Tr>
                </Thead>
                <Tbody>
                    {hardwareRows(result).map(row => (
                        <Tr key={row.key} data-key={row.key}>
                            <Td dataLabel="Device">{row.item}</Td>
                            <Td dataLabel="VMware">{row.source}</Td>
                            <Td dataLabel="Becomes">{row.target}</Td>
                        </Tr>
                    ))}
                </Tbody>
            </Table>
            {(result.notes || []).length > 0 && (
                <>
                    <Title headingLevel="h3" className="pf-v5-u-mt-md">Notes</Title>
                    <List aria-label="Notes" id="preview-notes">
                        {result.notes.map(n => <ListItem key={n}>{n}</ListItem>)}
                    </List>
                </>
            )}
            <ExpandableSection toggleText="Domain XML" id="preview-xml">
                <pre className="vm2kvm-log">{result.domain_xml}</pre>
            </ExpandableSection>
        </div>
    );
}
