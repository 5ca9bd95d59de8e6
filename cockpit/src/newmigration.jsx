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
import { inspectVm, listVms, migrateVm, serverThumbprint, TLS_PIN } from './vsphere.js';
import { NO_CONNECTION, VmTable, VsphereSource } from './vspheresource.jsx';

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

// initialName: the name the VM's first Inspect planned (without options); a name equal to it is
// not sent, so Migrate plans it the same way.
// remote: {vm, power_state} for a VM on ESXi or vCenter (its power options), else null.
function OptionsForm({ result, initialName, targets, targetsError, onStart, onPreview, busy, remote }) {
    const [name, setName] = useState(initialName);
    const [pool, setPool] = useState(DAEMON_DEFAULT);
    const [format, setFormat] = useState('qcow2');
    const [networks, setNetworks] = useState({});
    const [conversion, setConversion] = useState(true);
    const [verify, setVerify] = useState(false);
    const [shutdown, setShutdown] = useState(false);
    const [force, setForce] = useState(false);
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
        'shutdown-source': (remote && shutdown) || undefined,
        force: (remote && shutdown && force) || undefined,
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
            {remote && (
                <FormGroup label="Source VM" fieldId="option-shutdown-source" role="group">
                    {remote.power_state === 'poweredOn' && (
                        <Alert variant="warning" isInline isPlain id="source-powered-on"
                               title={`${remote.vm} is powered on`}>
                            vm2kvm copies a VM only while it is off: shut it down in vSphere, or let the
                            migration shut it down first.
                        </Alert>
                    )}
                    <Checkbox id="option-shutdown-source" isChecked={shutdown}
                              onChange={(_e, v) => setShutdown(v)}
                              label="Shut the source VM down first (a guest shutdown through VMware Tools)" />
                    <Checkbox id="option-force" isChecked={force} isDisabled={!shutdown}
                              onChange={(_e, v) => setForce(v)}
                              label="Power it off when its guest cannot be shut down" />
                </FormGroup>
            )}
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
    const [conn, setConn] = useState(NO_CONNECTION);
    const [listing, setListing] = useState(false);
    const [vms, setVms] = useState(null); // {uri, list}: the last listing
    // The inspected VM on ESXi or vCenter: {conn, vm, power_state}; null for a file.
    const [remote, setRemote] = useState(null);

    const failed = title => err => setError({ err, title });

    const runList = (over = {}) => {
        const using = { ...conn, ...over };
        setConn(using);
        setListing(true);
        setError(null);
        setVms(null);
        setResult(null);
        setRemote(null);
        listVms(using)
                .then(list => setVms({ uri: using.uri, list }))
                .catch(failed('Listing the VMs failed'))
                .finally(() => setListing(false));
    };

    const inspectRemote = vm => {
        const chosen = { conn, vm: vm.name, power_state: vm.power_state };
        setInspecting(true);
        setError(null);
        setResult(null);
        inspectVm(conn, vm.name, {})
                .then(r => { setInitialName(r.name); setRemote(chosen); setResult(r) })
                .catch(failed('Inspect failed'))
                .finally(() => setInspecting(false));
    };

    const runInspect = () => {
        setInspecting(true);
        setError(null);
        setResult(null);
        setRemote(null);
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
        const again = remote
            ? inspectVm(remote.conn, remote.vm, options)
            : inspect(result.source, variantOptions(options));
        again
                .then(setResult)
                .catch(err => setError({ err, title: 'Inspect failed' }))
                .finally(() => setInspecting(false));
    };

    const start = options => {
        setStarting(true);
        setError(null);
        const started = remote
            ? migrateVm(remote.conn, remote.vm, options)
            : migrate(result.source, variantOptions(options)).then(jobNumber);
        started
                .then(number => go(['job', String(number)]))
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
                    <Form onSubmit={e => {
                        e.preventDefault();
                        if (kind === 'file' && path)
                            runInspect();
                        else if (kind === 'vsphere' && conn.password)
                            runList();
                    }}>
                        <FormGroup role="radiogroup" fieldId="source-kind" label="Where the VM is" isInline>
                            <Radio id="source-kind-file" name="source-kind" label="File on this host"
                                   isChecked={kind === 'file'} onChange={() => setKind('file')} />
                            <Radio id="source-kind-vsphere" name="source-kind" label="VMware ESXi or vCenter"
                                   isChecked={kind === 'vsphere'} onChange={() => setKind('vsphere')} />
                        </FormGroup>
                        {kind === 'file'
                            ? <FileSource path={path} setPath={setPath} onInspect={runInspect} busy={inspecting} />
                            : <VsphereSource conn={conn} setConn={setConn} busy={listing} />}
                    </Form>
                </CardBody>
            </Card>
            {kind === 'vsphere' && vms && (
                <Card className="pf-v5-u-my-md">
                    <CardTitle component="h2">VMs</CardTitle>
                    <CardBody>
                        <VmTable vms={vms.list} uri={vms.uri} inspected={remote && remote.vm}
                                 onInspect={inspectRemote} busy={inspecting || starting} />
                    </CardBody>
                </Card>
            )}
            {error && (
                <ErrorAlert error={error.err} title={error.title} id="migration-error">
                    {kind === 'vsphere' && serverThumbprint(error.err) && (
                        <Button variant="secondary" id="pin-thumbprint"
                                onClick={() => runList({ tls: TLS_PIN, thumbprint: serverThumbprint(error.err) })}>
                            Pin this thumbprint
                        </Button>
                    )}
                </ErrorAlert>
            )}
            {listing && <Spinner size="lg" aria-label="Listing the VMs" />}
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
                            <OptionsForm key={remote ? `${remote.conn.uri}|${remote.vm}` : result.source}
                                         result={result} initialName={initialName} remote={remote}
                                         targets={targets} targetsError={targetsError} onPreview={preview}
                                         onStart={start} busy={starting || inspecting} />
                        </CardBody>
                    </Card>
                </>
            )}
        </PageSection>
    );
}
