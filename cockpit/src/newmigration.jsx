import React, { useEffect, useState } from 'react';
import {
    ActionGroup, Alert, Breadcrumb, BreadcrumbItem, Button, Card, CardBody, CardTitle, Checkbox,
    Form, FormGroup, FormHelperText, FormSelect, FormSelectOption, HelperText, HelperTextItem,
    InputGroup, InputGroupItem, PageSection, Radio, Spinner, TextInput,
} from '@patternfly/react-core';

import { inspect, jobNumber, listPoolsAndNetworks, migrate, variantOptions } from './dbus.js';
import { ErrorAlert } from './errors.jsx';
import { FileBrowser, isSourceFile } from './browse.jsx';
import { go } from './nav.js';
import { Preview } from './preview.jsx';
import { mappings, vmwareNetworks } from './options.js';

const DAEMON_DEFAULT = '';

// Pools and networks of the host vm2kvmd writes to (Manager1.ListPoolsAndNetworks).
function useTargets() {
    const [targets, setTargets] = useState(null);
    const [error, setError] = useState(null);
    useEffect(() => {
        listPoolsAndNetworks().then(setTargets)
                .catch(setError);
    }, []);
    return { targets, error };
}

function FileSource({ path, setPath, onInspect, busy }) {
    const [browsing, setBrowsing] = useState(false);
    const dir = path.startsWith('/') ? path.replace(/\/[^/]*$/, '') || '/' : '/';
    return (
        <FormGroup label="VMware file on this host" fieldId="source-path" isRequired>
            <InputGroup>
                <InputGroupItem isFill>
                    <TextInput id="source-path" value={path} onChange={(_e, v) => setPath(v)}
                               placeholder="/srv/vmware/web01/web01.vmx" isRequired />
                </InputGroupItem>
                <InputGroupItem>
                    <Button variant="control" id="browse-source" onClick={() => setBrowsing(true)}>Browse…</Button>
                </InputGroupItem>
                <InputGroupItem>
                    <Button variant="secondary" id="inspect-source" isDisabled={!path || busy}
                            isLoading={busy} onClick={onInspect}>Inspect</Button>
                </InputGroupItem>
            </InputGroup>
            <FormHelperText>
                <HelperText>
                    <HelperTextItem>
                        {path && !isSourceFile(path)
                            ? 'vm2kvm reads .vmx files, .ovf descriptors next to their disks and .ova archives.'
                            : 'An absolute path to a .vmx, .ovf or .ova.'}
                    </HelperTextItem>
                </HelperText>
            </FormHelperText>
            {browsing && (
                <FileBrowser start={dir} onClose={() => setBrowsing(false)}
                             onSelect={p => { setPath(p); setBrowsing(false) }} />
            )}
        </FormGroup>
    );
}

// vSphere needs the password as a file descriptor (ListVms' "h" argument), which Cockpit's
// D-Bus channel cannot carry (docs/decisions.md, issue 14): this is where the form goes once it can.
function VsphereSource() {
    return (
        <Alert variant="info" isInline id="vsphere-unavailable"
               title="ESXi and vCenter sources: use vm2kvmctl for now">
            <p>
                vm2kvmd takes the vSphere password only as a file descriptor, never as text, and
                Cockpit's D-Bus channel cannot pass one. On the host, run
                {' '}<code>vm2kvmctl list-vms esx://root@esx.example.com/</code> and
                {' '}<code>vm2kvmctl migrate esx://root@esx.example.com/?vm=NAME</code>; the job appears in this page's table.
            </p>
        </Alert>
    );
}

// initialName: the name the VM's first Inspect planned (without options); a name equal to it is
// not sent, so Migrate plans it the same way.
function OptionsForm({ result, initialName, targets, targetsError, onStart, onPreview, busy }) {
    const [name, setName] = useState(initialName);
    const [pool, setPool] = useState(DAEMON_DEFAULT);
    const [format, setFormat] = useState('qcow2');
    const [networks, setNetworks] = useState({});
    const [conversion, setConversion] = useState(true);
    const [verify, setVerify] = useState(false);
    const vmNetworks = vmwareNetworks(result);
    const pools = targets ? targets.pools.filter(p => p.active) : [];
    const libvirtNetworks = targets ? targets.networks.filter(n => n.active) : [];
    const bridges = targets ? targets.bridges || [] : [];

    const collect = () => ({
        name: name !== initialName ? name : '',
        pool,
        format: format !== 'qcow2' ? format : '',
        // A choice is "network:NAME" (a libvirt network) or "bridge:NAME" (a host bridge).
        network: mappings(networks, 'network'),
        bridge: mappings(networks, 'bridge'),
        'guest-conversion': conversion ? undefined : false,
        verify: verify || undefined,
    });
    const start = event => {
        event.preventDefault();
        onStart(collect());
    };

    return (
        <Form id="migration-options" onSubmit={start} isHorizontal>
            <FormGroup label="Name" fieldId="option-name" isRequired>
                <TextInput id="option-name" value={name} onChange={(_e, v) => setName(v)} isRequired />
            </FormGroup>
            {targetsError && (
                <ErrorAlert error={targetsError} title="Cannot list libvirt's storage pools and networks"
                            id="targets-error" />
            )}
            <FormGroup label="Storage pool" fieldId="option-pool">
                <FormSelect id="option-pool" value={pool} onChange={(_e, v) => setPool(v)}>
                    <FormSelectOption value={DAEMON_DEFAULT}
                                      label={`Default${targets && targets.default_pool ? ` (${targets.default_pool})` : ''}`} />
                    {pools.map(p => <FormSelectOption key={p.name} value={p.name} label={`${p.name} (${p.type})`} />)}
                </FormSelect>
            </FormGroup>
            <FormGroup label="Disk format" fieldId="option-format">
                <FormSelect id="option-format" value={format} onChange={(_e, v) => setFormat(v)}>
                    <FormSelectOption value="qcow2" label="qcow2" />
                    <FormSelectOption value="raw" label="raw" />
                </FormSelect>
            </FormGroup>
            {vmNetworks.map((net, i) => (
                <FormGroup key={net} label={`Network for "${net}"`} fieldId={`option-network-${i}`}>
                    <FormSelect id={`option-network-${i}`} data-vmware-network={net}
                                value={networks[net] || DAEMON_DEFAULT}
                                onChange={(_e, v) => setNetworks(prev => ({ ...prev, [net]: v }))}>
                        <FormSelectOption value={DAEMON_DEFAULT}
                                          label={`Default${targets && targets.default_network ? ` (${targets.default_network})` : ''}`} />
                        {libvirtNetworks.map(n => (
                            <FormSelectOption key={`network:${n.name}`} value={`network:${n.name}`}
                                              label={`Network ${n.name}`} />
                        ))}
                        {bridges.map(b => (
                            <FormSelectOption key={`bridge:${b}`} value={`bridge:${b}`} label={`Bridge ${b}`} />
                        ))}
                    </FormSelect>
                </FormGroup>
            ))}
            <FormGroup label="Guest" fieldId="option-guest-conversion" role="group">
                <Checkbox id="option-guest-conversion" isChecked={conversion}
                          onChange={(_e, v) => setConversion(v)}
                          label="Convert the guest (virtio drivers, boot configuration, VMware Tools removed)" />
                <Checkbox id="option-verify" isChecked={verify} onChange={(_e, v) => setVerify(v)}
                          label="Verify the copied disks against the source" />
            </FormGroup>
            <ActionGroup>
                <Button variant="primary" type="submit" id="start-migration" isDisabled={busy || !name}
                        isLoading={busy}>Start migration</Button>
                <Button variant="secondary" id="update-preview" isDisabled={busy || !name}
                        onClick={() => onPreview(collect())}>Update preview</Button>
                <Button variant="link" onClick={() => go([])}>Cancel</Button>
            </ActionGroup>
        </Form>
    );
}

export function NewMigration() {
    const [kind, setKind] = useState('file');
    const [path, setPath] = useState('');
    const [inspecting, setInspecting] = useState(false);
    const [result, setResult] = useState(null);
    const [initialName, setInitialName] = useState('');
    const [error, setError] = useState(null);
    const [starting, setStarting] = useState(false);
    const { targets, error: targetsError } = useTargets();

    const runInspect = () => {
        setInspecting(true);
        setError(null);
        setResult(null);
        inspect(path.trim(), {})
                .then(r => { setInitialName(r.name); setResult(r) })
                .catch(err => setError({ err, title: 'Inspect failed' }))
                .finally(() => setInspecting(false));
    };

    // Inspect again with the options as they are: the preview then shows the pool's paths,
    // the network mapping and the name Migrate would use.
    const preview = options => {
        setInspecting(true);
        setError(null);
        inspect(result.source, variantOptions(options))
                .then(setResult)
                .catch(err => setError({ err, title: 'Inspect failed' }))
                .finally(() => setInspecting(false));
    };

    const start = options => {
        setStarting(true);
        setError(null);
        migrate(result.source, variantOptions(options))
                .then(job => go(['job', String(jobNumber(job))]))
                .catch(err => setError({ err, title: 'The migration did not start' }))
                .finally(() => setStarting(false));
    };

    return (
        <PageSection>
            <Breadcrumb>
                <BreadcrumbItem to="#/" onClick={e => { e.preventDefault(); go([]) }}>Jobs</BreadcrumbItem>
                <BreadcrumbItem isActive>New migration</BreadcrumbItem>
            </Breadcrumb>
            <Card className="pf-v5-u-my-md">
                <CardTitle component="h2">Source</CardTitle>
                <CardBody>
                    <Form onSubmit={e => { e.preventDefault(); if (path) runInspect() }}>
                        <FormGroup role="radiogroup" fieldId="source-kind" label="Where the VM is" isInline>
                            <Radio id="source-kind-file" name="source-kind" label="File on this host"
                                   isChecked={kind === 'file'} onChange={() => setKind('file')} />
                            <Radio id="source-kind-vsphere" name="source-kind" label="VMware ESXi or vCenter"
                                   isChecked={kind === 'vsphere'} onChange={() => setKind('vsphere')} />
                        </FormGroup>
                        {kind === 'file'
                            ? <FileSource path={path} setPath={setPath} onInspect={runInspect} busy={inspecting} />
                            : <VsphereSource />}
                    </Form>
                </CardBody>
            </Card>
            {error && <ErrorAlert error={error.err} title={error.title} id="migration-error" />}
            {inspecting && <Spinner size="lg" aria-label="Inspecting the VM" />}
            {result && (
                <>
                    <Card className="pf-v5-u-my-md">
                        <CardTitle component="h2">Preview</CardTitle>
                        <CardBody><Preview result={result} /></CardBody>
                    </Card>
                    <Card className="pf-v5-u-my-md">
                        <CardTitle component="h2">Options</CardTitle>
                        <CardBody>
                            {/* keyed: a VM inspected next starts from its own name, not the last one's */}
                            <OptionsForm key={result.source} result={result} initialName={initialName}
                                         targets={targets} targetsError={targetsError} onPreview={preview}
                                         onStart={start} busy={starting || inspecting} />
                        </CardBody>
                    </Card>
                </>
            )}
        </PageSection>
    );
}
