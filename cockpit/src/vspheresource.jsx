import React, { useState } from 'react';
import {
    ActionGroup, Alert, Button, Form, FormGroup, FormHelperText, Grid, GridItem, HelperText, HelperTextItem,
    Modal, Radio, TextInput,
} from '@patternfly/react-core';
import { Table, Thead, Tr, Th, Tbody, Td } from '@patternfly/react-table';

import { bytes } from './format.js';
import { ErrorAlert } from './errors.jsx';
import { TLS_NO_VERIFY, TLS_PIN, TLS_VERIFY, hostOf, retryJob, serverThumbprint, sourceUri } from './vsphere.js';

export const NO_CONNECTION = { uri: '', user: 'root', password: '', tls: TLS_VERIFY, thumbprint: '' };

// Where the ESXi host or vCenter is, who logs in, and how its certificate is trusted.  The
// password stays in this page's memory and goes only to vm2kvmctl's stdin (vsphere.js).
export function VsphereSource({ conn, setConn, busy }) {
    const set = key => (_e, value) => setConn(prev => ({ ...prev, [key]: value }));
    const uri = sourceUri(conn);
    return (
        <>
            <Grid hasGutter>
                <GridItem md={6}>
                    <FormGroup label="ESXi or vCenter URI" fieldId="source-uri" isRequired>
                        <TextInput id="source-uri" value={conn.uri} onChange={set('uri')} isRequired
                                   placeholder="esx://esx.example.com/ or vpx://vcenter.example.com/Datacenter/Cluster/host" />
                        <FormHelperText>
                            <HelperText>
                                <HelperTextItem>
                                    {uri ? <>vm2kvmctl connects to <code id="source-uri-used">{uri}</code></> : "virt-v2v's spelling; a host name alone means a standalone ESXi."}
                                </HelperTextItem>
                            </HelperText>
                        </FormHelperText>
                    </FormGroup>
                </GridItem>
                <GridItem md={3}>
                    <FormGroup label="User name" fieldId="source-user">
                        <TextInput id="source-user" value={conn.user} onChange={set('user')} autoComplete="username" />
                    </FormGroup>
                </GridItem>
                <GridItem md={3}>
                    <FormGroup label="Password" fieldId="source-password" isRequired>
                        <TextInput id="source-password" type="password" value={conn.password}
                                   onChange={set('password')} autoComplete="current-password" isRequired />
                    </FormGroup>
                </GridItem>
            </Grid>
            <FormGroup role="radiogroup" fieldId="source-tls" label="Server certificate">
                <Radio id="tls-verify" name="source-tls" isChecked={conn.tls === TLS_VERIFY}
                       onChange={() => setConn(prev => ({ ...prev, tls: TLS_VERIFY }))}
                       label="Verify it with this host's CA certificates" />
                <Radio id="tls-pin" name="source-tls" isChecked={conn.tls === TLS_PIN}
                       onChange={() => setConn(prev => ({ ...prev, tls: TLS_PIN }))}
                       label="Accept only the certificate with this SHA-256 thumbprint" />
                {conn.tls === TLS_PIN && (
                    <TextInput id="source-thumbprint" aria-label="SHA-256 thumbprint" value={conn.thumbprint}
                               onChange={set('thumbprint')} placeholder="AB:CD:…" />
                )}
                <Radio id="tls-no-verify" name="source-tls" isChecked={conn.tls === TLS_NO_VERIFY}
                       onChange={() => setConn(prev => ({ ...prev, tls: TLS_NO_VERIFY }))}
                       label="Do not verify it (no_verify=1)" />
                {conn.tls === TLS_NO_VERIFY && (
                    <Alert variant="warning" isInline isPlain id="tls-warning"
                           title="The certificate will not be verified">
                        Anyone between this host and the server can read the password and the disks.
                        Pin the thumbprint instead when you can; the job log records the server&apos;s.
                    </Alert>
                )}
            </FormGroup>
            <ActionGroup className="pf-v5-u-mt-0">
                <Button variant="secondary" type="submit" id="list-vms" isLoading={busy}
                        isDisabled={busy || !uri || !conn.password}>List VMs</Button>
            </ActionGroup>
        </>
    );
}

function disksText(vm) {
    const disks = vm.disks || [];
    if (!disks.length)
        return '—';
    return disks.map(d => [bytes(d.capacity_bytes), d.datastore].filter(Boolean).join(' on ')).join(', ');
}

// The host's VMs (list-vms --json); a VM's name inspects it.
export function VmTable({ vms, uri, inspected, onInspect, busy }) {
    return (
        <Table aria-label="VMware VMs" id="vsphere-vms" variant="compact">
            <Thead>
                <Tr>
                    <Th>Name</Th>
                    <Th>Power</Th>
                    <Th>Guest OS</Th>
                    <Th>CPUs</Th>
                    <Th>Memory</Th>
                    <Th>Disks</Th>
                </Tr>
            </Thead>
            <Tbody>
                {vms.map(vm => (
                    <Tr key={vm.moid || vm.name} data-vm={vm.name} isRowSelected={vm.name === inspected}>
                        <Td dataLabel="Name">
                            <Button variant="link" isInline isDisabled={busy} aria-label={`Inspect ${vm.name}`}
                                    onClick={() => onInspect(vm)}>{vm.name}</Button>
                        </Td>
                        <Td dataLabel="Power">{vm.power_state || '—'}</Td>
                        <Td dataLabel="Guest OS">{vm.guest_os || '—'}</Td>
                        <Td dataLabel="CPUs">{vm.cpus}</Td>
                        <Td dataLabel="Memory">{bytes((vm.memory_mib || 0) * 1024 * 1024)}</Td>
                        <Td dataLabel="Disks">{disksText(vm)}</Td>
                    </Tr>
                ))}
                {!vms.length && (
                    <Tr><Td colSpan={6}>No VMs on {hostOf(uri)}</Td></Tr>
                )}
            </Tbody>
        </Table>
    );
}

// Retry of a vSphere job: vm2kvmd does not keep the password, so it is asked for again (and a
// pinned thumbprint, which is not kept with the job either); onRetried(new job number).
export function RetryDialog({ job, number, onClose, onRetried }) {
    const [password, setPassword] = useState('');
    const [thumbprint, setThumbprint] = useState('');
    const [busy, setBusy] = useState(false);
    const [error, setError] = useState(null);
    const retry = (pin = thumbprint) => {
        setThumbprint(pin);
        setBusy(true);
        setError(null);
        retryJob(number, { password, thumbprint: pin })
                .then(onRetried)
                .catch(setError)
                .finally(() => setBusy(false));
    };
    const pin = serverThumbprint(error);
    return (
        <Modal variant="small" isOpen onClose={onClose} title={`Retry job ${number}`} id="retry-dialog"
               actions={[
                   <Button key="retry" variant="primary" type="submit" form="retry-form" id="retry-confirm"
                           isLoading={busy} isDisabled={busy || !password}>Retry</Button>,
                   <Button key="cancel" variant="link" onClick={onClose}>Cancel</Button>,
               ]}>
            <Form id="retry-form" onSubmit={e => { e.preventDefault(); if (password) retry() }}>
                <p>{job.Source}: vm2kvm does not keep the password; give it again.</p>
                <FormGroup label="Password" fieldId="retry-password" isRequired>
                    <TextInput id="retry-password" type="password" value={password} isRequired
                               autoComplete="current-password" onChange={(_e, v) => setPassword(v)} />
                </FormGroup>
                <FormGroup label="Pinned SHA-256 thumbprint" fieldId="retry-thumbprint">
                    <TextInput id="retry-thumbprint" value={thumbprint} onChange={(_e, v) => setThumbprint(v)}
                               placeholder="empty: verify with this host's CA certificates" />
                </FormGroup>
                {error && (
                    <ErrorAlert error={error} title="The retry did not start" id="retry-error">
                        {pin && (
                            <Button variant="secondary" id="retry-pin" onClick={() => retry(pin)}>
                                Pin this thumbprint
                            </Button>
                        )}
                    </ErrorAlert>
                )}
            </Form>
        </Modal>
    );
}
