import React, { useEffect, useRef, useState } from 'react';
import {
    Alert, Breadcrumb, BreadcrumbItem, Button, Card, CardBody, CardTitle, DescriptionList,
    DescriptionListDescription, DescriptionListGroup, DescriptionListTerm, Flex, FlexItem,
    List, ListItem, PageSection, Title,
} from '@patternfly/react-core';
import { Table, Thead, Tr, Th, Tbody, Td } from '@patternfly/react-table';

import { getLog, getReport } from './dbus.js';
import { ErrorAlert } from './errors.jsx';
import { bytes, time } from './format.js';
import { JobActions, JobProgress, StateLabel, isFinished, useNow } from './jobs.jsx';
import { go } from './nav.js';

const LOG_POLL_MS = 2000;

// Whether cockpit-machines is installed: the bridge lists every package it serves in
// manifests.json (what the shell builds its menu from).
function useMachinesInstalled() {
    const [installed, setInstalled] = useState(false);
    useEffect(() => {
        window.fetch('../manifests.json')
                .then(response => (response.ok ? response.json() : {}))
                .then(manifests => setInstalled('machines' in manifests))
                .catch(() => setInstalled(false));
    }, []);
    return installed;
}

export function machinesLocation(domain) {
    return `/machines#vm?name=${encodeURIComponent(domain)}&connection=system`;
}

// The job's log from the daemon (GetLog has no signal): read again every 2 s while the job
// runs, and once more when it ends.
function JobLog({ number, finished }) {
    const [lines, setLines] = useState(null);
    const [error, setError] = useState(null);
    const box = useRef(null);
    useEffect(() => {
        let timer = null;
        let stopped = false;
        const read = () => {
            getLog(number)
                    .then(log => { setLines(log); setError(null) })
                    .catch(setError)
                    .finally(() => {
                        if (!stopped && !finished)
                            timer = window.setTimeout(read, LOG_POLL_MS);
                    });
        };
        read();
        return () => {
            stopped = true;
            window.clearTimeout(timer);
        };
    }, [number, finished]);
    useEffect(() => {
        // Follow the end while it grows, as `vm2kvmctl logs --follow` does.
        if (box.current)
            box.current.scrollTop = box.current.scrollHeight;
    }, [lines]);
    return (
        <Card>
            <CardTitle component="h2">Log</CardTitle>
            <CardBody>
                <ErrorAlert error={error} title="Cannot read the log" />
                <pre className="vm2kvm-log" id="job-log" role="log" aria-label="Job log" ref={box} tabIndex={0}>
                    {(lines || []).map(([us, phase, message]) =>
                        `${new Date(Number(us) / 1000).toLocaleTimeString()}  ${phase ? `[${phase}] ` : ''}${message}\n`).join('')}
                </pre>
            </CardBody>
        </Card>
    );
}

function RowsTable({ label, id, columns, rows }) {
    return (
        <Table aria-label={label} id={id} variant="compact">
            <Thead>
                <Tr>{columns.map(([title]) => <Th key={title}>{title}</Th>)}</Tr>
            </Thead>
            <Tbody>
                {rows.map((row, i) => (
                    <Tr key={row.key || i} data-key={row.key}>
                        {columns.map(([title, field]) => <Td key={title} dataLabel={title}>{row[field] ?? ''}</Td>)}
                    </Tr>
                ))}
            </Tbody>
        </Table>
    );
}

// The migration report's tables (docs/dbus-api.md, "Migration report"): its texts are final.
export function Report({ report }) {
    const changes = [];
    for (const area of report.changes || [])
        for (const change of area.changes)
            changes.push({ area: area.area, summary: change.summary, path: change.path });
    const guest = report.guest || {};
    return (
        <Card id="job-report">
            <CardTitle component="h2">Migration report</CardTitle>
            <CardBody>
                <Title headingLevel="h3">Source and target</Title>
                <RowsTable label="Source and target" id="report-hardware"
                           columns={[['Item', 'item'], ['VMware', 'source'], ['KVM', 'target']]}
                           rows={report.hardware || []} />
                <Title headingLevel="h3" className="pf-v5-u-mt-md">Guest</Title>
                <p id="report-guest-status">{guest.status}</p>
                {(guest.facts || []).length > 0 && (
                    <RowsTable label="Guest facts" id="report-guest"
                               columns={[['Item', 'item'], ['Value', 'value']]} rows={guest.facts} />
                )}
                {(guest.filesystems || []).length > 0 && (
                    <Title headingLevel="h4" className="pf-v5-u-mt-sm">File systems</Title>
                )}
                {(guest.filesystems || []).length > 0 && (
                    <RowsTable label="File systems" id="report-filesystems"
                               columns={[['Mount point', 'mountpoint'], ['Device', 'target_device'],
                                   ['Type', 'type'], ['UUID', 'uuid'], ['Label', 'label']]}
                               rows={guest.filesystems.map(f => ({ ...f, key: f.device, mountpoint: f.mountpoint ?? '—' }))} />
                )}
                {report.devices && report.devices.reason && (
                    <p id="report-devices" className="pf-v5-u-mt-sm">Devices: {report.devices.reason}</p>
                )}
                <Title headingLevel="h3" className="pf-v5-u-mt-md">Changes in the guest</Title>
                {changes.length
                    ? <RowsTable label="Changes in the guest" id="report-changes"
                                 columns={[['Area', 'area'], ['Change', 'summary'], ['File', 'path']]} rows={changes} />
                    : <p>No changes.</p>}
                {(report.notes || []).length > 0 && (
                    <>
                        <Title headingLevel="h3" className="pf-v5-u-mt-md">Notes</Title>
                        <List aria-label="Report notes">{report.notes.map(n => <ListItem key={n}>{n}</ListItem>)}</List>
                    </>
                )}
            </CardBody>
        </Card>
    );
}

function useReport(number, completed) {
    const [report, setReport] = useState(null);
    const [error, setError] = useState(null);
    useEffect(() => {
        setReport(null);
        if (!completed)
            return;
        getReport(number).then(setReport)
                .catch(setError);
    }, [number, completed]);
    return { report, error };
}

export function JobDetail({ number, job }) {
    const [actionError, setActionError] = useState(null);
    const machines = useMachinesInstalled();
    const finished = job ? isFinished(job) : false;
    const completed = job ? job.State === 'completed' : false;
    const { report, error: reportError } = useReport(number, completed);
    const now = useNow(job && !finished);

    const crumbs = (
        <Breadcrumb>
            <BreadcrumbItem to="#/" onClick={e => { e.preventDefault(); go([]) }}>Jobs</BreadcrumbItem>
            <BreadcrumbItem isActive>Job {number}</BreadcrumbItem>
        </Breadcrumb>
    );
    if (!job) {
        return (
            <PageSection>
                {crumbs}
                <Alert variant="warning" isInline title={`There is no job ${number}`} id="job-missing" />
            </PageSection>
        );
    }
    const [errorName, errorMessage] = job.Error || ['', ''];
    return (
        <PageSection>
            {crumbs}
            <Flex className="pf-v5-u-my-md" alignItems={{ default: 'alignItemsCenter' }}>
                <FlexItem><Title headingLevel="h2" id="job-title">Job {number}</Title></FlexItem>
                <FlexItem><StateLabel job={job} number={number} /></FlexItem>
                <FlexItem align={{ default: 'alignRight' }}>
                    <JobActions job={job} number={number} onError={setActionError} />
                </FlexItem>
            </Flex>
            {actionError && (
                <ErrorAlert error={actionError.err} title={`${actionError.what} failed`} id="job-action-error"
                            onClose={() => setActionError(null)} />
            )}
            {errorName && (
                <ErrorAlert error={{ name: errorName, message: errorMessage }} id="job-error"
                            title={job.State === 'cancelled' ? 'The migration was cancelled' : 'The migration failed'} />
            )}
            {completed && job.Domain && (
                <Alert variant="success" isInline title={`Domain ${job.Domain} is defined`} id="job-done">
                    {machines
                        ? (
                            <Button variant="link" isInline component="a" id="open-in-machines"
                                    href={`#${machinesLocation(job.Domain)}`}
                                    data-location={machinesLocation(job.Domain)}
                                    onClick={e => { e.preventDefault(); window.cockpit.jump(machinesLocation(job.Domain)) }}>
                                Open {job.Domain} in Virtual Machines
                            </Button>
                        )
                        : <p>Install cockpit-machines to manage it here, or use virt-manager or virsh.</p>}
                </Alert>
            )}
            <Card className="pf-v5-u-my-md">
                <CardBody>
                    <DescriptionList isHorizontal isCompact id="job-properties">
                        <DescriptionListGroup>
                            <DescriptionListTerm>Source</DescriptionListTerm>
                            <DescriptionListDescription id="job-source">{job.Source}</DescriptionListDescription>
                        </DescriptionListGroup>
                        <DescriptionListGroup>
                            <DescriptionListTerm>Phase</DescriptionListTerm>
                            <DescriptionListDescription id="job-phase">{job.Phase || '—'}</DescriptionListDescription>
                        </DescriptionListGroup>
                        <DescriptionListGroup>
                            <DescriptionListTerm>Progress</DescriptionListTerm>
                            <DescriptionListDescription>
                                <JobProgress job={job} number={number} now={now} />
                                {job.Bytes > 0 && <span>{bytes(job.BytesDone)} of {bytes(job.Bytes)}</span>}
                            </DescriptionListDescription>
                        </DescriptionListGroup>
                        <DescriptionListGroup>
                            <DescriptionListTerm>Domain</DescriptionListTerm>
                            <DescriptionListDescription id="job-domain">{job.Domain || '—'}</DescriptionListDescription>
                        </DescriptionListGroup>
                        <DescriptionListGroup>
                            <DescriptionListTerm>Created</DescriptionListTerm>
                            <DescriptionListDescription>{time(job.CreateTime)}</DescriptionListDescription>
                        </DescriptionListGroup>
                        {job.EndTime > 0 && (
                            <DescriptionListGroup>
                                <DescriptionListTerm>Ended</DescriptionListTerm>
                                <DescriptionListDescription>{time(job.EndTime)}</DescriptionListDescription>
                            </DescriptionListGroup>
                        )}
                        {job.RetryOf > 0 && (
                            <DescriptionListGroup>
                                <DescriptionListTerm>Retry of</DescriptionListTerm>
                                <DescriptionListDescription>
                                    <Button variant="link" isInline onClick={() => go(['job', String(job.RetryOf)])}>
                                        Job {job.RetryOf}
                                    </Button>
                                </DescriptionListDescription>
                            </DescriptionListGroup>
                        )}
                        {Object.keys(job.Options || {}).length > 0 && (
                            <DescriptionListGroup>
                                <DescriptionListTerm>Options</DescriptionListTerm>
                                <DescriptionListDescription id="job-options">
                                    {Object.entries(job.Options).map(([key, value]) =>
                                        `${key}=${Array.isArray(value) ? value.join(',') : value}`).join('  ')}
                                </DescriptionListDescription>
                            </DescriptionListGroup>
                        )}
                        {(job.Outputs || []).length > 0 && (
                            <DescriptionListGroup>
                                <DescriptionListTerm>Written</DescriptionListTerm>
                                <DescriptionListDescription>
                                    <List isPlain>{job.Outputs.map(o => <ListItem key={o}>{o}</ListItem>)}</List>
                                </DescriptionListDescription>
                            </DescriptionListGroup>
                        )}
                        {(job.Notes || []).length > 0 && (
                            <DescriptionListGroup>
                                <DescriptionListTerm>Notes</DescriptionListTerm>
                                <DescriptionListDescription>
                                    <List id="job-notes">{job.Notes.map(n => <ListItem key={n}>{n}</ListItem>)}</List>
                                </DescriptionListDescription>
                            </DescriptionListGroup>
                        )}
                    </DescriptionList>
                </CardBody>
            </Card>
            {(job.Disks || []).length > 0 && (
                <Card className="pf-v5-u-my-md">
                    <CardTitle component="h2">Disks</CardTitle>
                    <CardBody>
                        <RowsTable label="Disks" id="job-disks"
                                   columns={[['Disk', 'key'], ['Target', 'target'], ['Copied', 'copied']]}
                                   rows={job.Disks.map(([key, target, total, done]) =>
                                       ({ key, target, copied: `${bytes(done)} of ${bytes(total)}` }))} />
                    </CardBody>
                </Card>
            )}
            {completed && reportError && <ErrorAlert error={reportError} title="No migration report" id="report-error" />}
            {report && <Report report={report} />}
            <div className="pf-v5-u-my-md">
                <JobLog number={number} finished={finished} />
            </div>
        </PageSection>
    );
}
