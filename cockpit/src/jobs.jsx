import React, { useEffect, useState } from 'react';
import {
    Button, EmptyState, EmptyStateBody, EmptyStateHeader, Flex, Label, PageSection, Progress,
    ProgressMeasureLocation, ProgressVariant, Switch, Toolbar, ToolbarContent, ToolbarItem,
} from '@patternfly/react-core';
import { Table, Thead, Tr, Th, Tbody, Td } from '@patternfly/react-table';

import { jobAction, jobNumber } from './dbus.js';
import { ErrorAlert } from './errors.jsx';
import { rateAndEta, sourceName } from './format.js';
import { go } from './nav.js';
import { isVsphereJob } from './vsphere.js';
import { RetryDialog } from './vspheresource.jsx';

const FINISHED = ['completed', 'failed', 'cancelled'];
const STATE_COLOR = { queued: 'grey', running: 'blue', completed: 'green', failed: 'red', cancelled: 'orange' };

export function isFinished(job) {
    return FINISHED.includes(job.State);
}

// Re-render once a second while something runs, so "time left" counts down between signals.
export function useNow(active) {
    const [now, setNow] = useState(Date.now());
    useEffect(() => {
        if (!active)
            return undefined;
        const timer = window.setInterval(() => setNow(Date.now()), 1000);
        return () => window.clearInterval(timer);
    }, [active]);
    return now;
}

// User names for the uids the jobs carry (getent through the bridge; the uid if unknown).
function useUserNames(uids) {
    const [names, setNames] = useState({});
    const key = [...new Set(uids)].sort().join(',');
    useEffect(() => {
        for (const uid of key ? key.split(',') : []) {
            window.cockpit.spawn(['getent', 'passwd', uid], { err: 'ignore' })
                    .then(out => setNames(prev => ({ ...prev, [uid]: out.split(':')[0] || uid })))
                    .catch(() => setNames(prev => ({ ...prev, [uid]: uid })));
        }
    }, [key]);
    return names;
}

export function JobProgress({ job, number, now }) {
    const finished = isFinished(job);
    const value = finished && job.State === 'completed' ? 100 : Math.round((job.Progress || 0) * 1000) / 10;
    let variant;
    if (job.State === 'completed')
        variant = ProgressVariant.success;
    else if (job.State === 'failed' || job.State === 'cancelled')
        variant = ProgressVariant.danger;
    const helper = rateAndEta(job, now);
    return (
        <Progress value={job.ProgressValid || finished ? value : 0}
                  title={job.State === 'queued' ? `queued${job.QueuePosition ? ` (${job.QueuePosition})` : ''}` : ''}
                  aria-label={`Progress of job ${number}`}
                  id={`job-progress-${number}`}
                  measureLocation={ProgressMeasureLocation.outside}
                  helperText={helper || undefined}
                  variant={variant}
                  size="sm" />
    );
}

export function JobActions({ job, number, onError, withDetails }) {
    const [busy, setBusy] = useState(false);
    const [asking, setAsking] = useState(false); // the password for a vSphere job's retry
    const retried = number => go(['job', String(number)]);
    const run = (method, after) => {
        setBusy(true);
        jobAction(number, method)
                .then(reply => {
                    onError(null);
                    if (after)
                        after(reply);
                })
                .catch(err => onError({ err, what: `${method} of job ${number}` }))
                .finally(() => setBusy(false));
    };
    const finished = isFinished(job);
    return (
        <Flex flexWrap={{ default: 'nowrap' }} spaceItems={{ default: 'spaceItemsSm' }}
              justifyContent={{ default: 'justifyContentFlexEnd' }}>
            {withDetails && (
                <Button variant="link" aria-label={`Details of job ${number}`} id={`job-details-${number}`}
                        onClick={() => go(['job', String(number)])}>Details</Button>
            )}
            {job.Cancelable && (
                <Button variant="secondary" isDanger isDisabled={busy} aria-label={`Cancel job ${number}`}
                        id={`job-cancel-${number}`} onClick={() => run('Cancel')}>Cancel</Button>
            )}
            {(job.State === 'failed' || job.State === 'cancelled') && (
                <Button variant="secondary" isDisabled={busy} aria-label={`Retry job ${number}`}
                        id={`job-retry-${number}`}
                        onClick={() => isVsphereJob(job)
                            ? setAsking(true)
                            : run('Retry', ([path]) => retried(jobNumber(path)))}>
                    Retry
                </Button>
            )}
            {asking && (
                <RetryDialog job={job} number={number} onClose={() => setAsking(false)}
                             onRetried={n => { setAsking(false); retried(n) }} />
            )}
            {finished && !job.Dismissed && (
                <Button variant="link" isDisabled={busy} aria-label={`Dismiss job ${number}`}
                        id={`job-dismiss-${number}`} onClick={() => run('Dismiss')}>Dismiss</Button>
            )}
        </Flex>
    );
}

export function StateLabel({ job, number }) {
    return (
        <Label color={STATE_COLOR[job.State] || 'grey'} id={`job-state-${number}`}>{job.State}</Label>
    );
}

export function JobsPage({ jobs }) {
    const [showDismissed, setShowDismissed] = useState(false);
    const [actionError, setActionError] = useState(null);
    const numbers = Object.keys(jobs).map(Number)
            .sort((a, b) => b - a)
            .filter(n => showDismissed || !jobs[n].Dismissed);
    const running = numbers.some(n => !isFinished(jobs[n]));
    const now = useNow(running);
    const names = useUserNames(numbers.map(n => String(jobs[n].User ?? '')).filter(Boolean));

    return (
        <PageSection>
            <Toolbar id="jobs-toolbar">
                <ToolbarContent>
                    <ToolbarItem>
                        <Button variant="primary" id="new-migration" onClick={() => go(['new'])}>
                            New migration
                        </Button>
                    </ToolbarItem>
                    <ToolbarItem alignSelf="center">
                        <Switch id="show-dismissed" label="Show dismissed jobs" isChecked={showDismissed}
                                onChange={(_event, checked) => setShowDismissed(checked)} />
                    </ToolbarItem>
                </ToolbarContent>
            </Toolbar>
            {actionError && (
                <ErrorAlert error={actionError.err} title={`${actionError.what} failed`} id="job-action-error"
                            onClose={() => setActionError(null)} />
            )}
            {numbers.length === 0
                ? (
                    <EmptyState id="no-jobs">
                        <EmptyStateHeader titleText="No migrations" headingLevel="h2" />
                        <EmptyStateBody>Start one with "New migration".</EmptyStateBody>
                    </EmptyState>
                )
                : (
                    <Table aria-label="Migration jobs" id="jobs-table" variant="compact">
                        <Thead>
                            <Tr>
                                <Th>Job</Th>
                                <Th>Source</Th>
                                <Th>Domain</Th>
                                <Th>State</Th>
                                <Th>Phase</Th>
                                <Th width={25}>Progress</Th>
                                <Th>User</Th>
                                <Th screenReaderText="Actions" />
                            </Tr>
                        </Thead>
                        <Tbody>
                            {numbers.map(n => {
                                const job = jobs[n];
                                return (
                                    <Tr key={n} id={`job-row-${n}`} data-job={n} data-state={job.State}>
                                        <Td dataLabel="Job">
                                            <Button variant="link" isInline onClick={() => go(['job', String(n)])}
                                                    aria-label={`Job ${n}`}>{n}</Button>
                                        </Td>
                                        <Td dataLabel="Source" title={job.Source}>{sourceName(job.Source)}</Td>
                                        <Td dataLabel="Domain">{job.Domain}</Td>
                                        <Td dataLabel="State"><StateLabel job={job} number={n} /></Td>
                                        <Td dataLabel="Phase" id={`job-phase-${n}`}>{job.Phase}</Td>
                                        <Td dataLabel="Progress"><JobProgress job={job} number={n} now={now} /></Td>
                                        <Td dataLabel="User">{names[String(job.User)] ?? job.User}</Td>
                                        <Td dataLabel="Actions" isActionCell>
                                            <JobActions job={job} number={n} onError={setActionError} withDetails />
                                        </Td>
                                    </Tr>
                                );
                            })}
                        </Tbody>
                    </Table>
                )}
        </PageSection>
    );
}
