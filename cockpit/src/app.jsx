import React, { useCallback, useEffect, useState } from 'react';
import { Page, PageSection, Title, EmptyState, EmptyStateHeader, Spinner } from '@patternfly/react-core';

import { followJobs, listJobs, jobNumber } from './dbus.js';
import { ErrorAlert } from './errors.jsx';
import { JobsPage } from './jobs.jsx';
import { JobDetail } from './job.jsx';
import { NewMigration } from './newmigration.jsx';
import { useLocation } from './nav.js';

// Every job by number, kept current from the daemon's signals; reloaded whole when the daemon
// (re)appears on the bus, so the page survives a daemon restart.
function useJobs() {
    const [jobs, setJobs] = useState(null);
    const [error, setError] = useState(null);

    const reload = useCallback(() => {
        listJobs()
                .then(list => {
                    const next = {};
                    for (const { job, properties } of list)
                        next[jobNumber(job)] = { ...properties, path: job };
                    setJobs(next);
                    setError(null);
                })
                .catch(err => {
                    setError(err);
                    setJobs(prev => prev || {});
                });
    }, []);

    useEffect(() => {
        const stop = followJobs({
            onChange: (path, props) => setJobs(prev => {
                const number = jobNumber(path);
                return { ...(prev || {}), [number]: { ...((prev || {})[number] || { path }), ...props } };
            }),
            onRemoved: path => setJobs(prev => {
                const next = { ...(prev || {}) };
                delete next[jobNumber(path)];
                return next;
            }),
            onCompleted: () => {}, // the final values came before it (docs/dbus-api.md)
            onOwner: owner => {
                if (owner)
                    reload();
                else if (owner === null)
                    setError({ name: 'org.freedesktop.DBus.Error.NameHasNoOwner', message: 'vm2kvmd is not running' });
            },
            onClose: problem => setError({
                problem: problem.problem || 'disconnected',
                message: `Cockpit's connection to the system bus closed (${problem.problem || 'disconnected'})`,
            }),
        });
        reload();
        return stop;
    }, [reload]);

    return { jobs, error };
}

export function App() {
    const path = useLocation();
    const { jobs, error } = useJobs();

    let body;
    if (path[0] === 'new') {
        body = <NewMigration />;
    } else if (jobs !== null && path[0] === 'job' && path[1]) {
        body = <JobDetail number={Number(path[1])} job={jobs[Number(path[1])]} />;
    } else if (jobs === null) {
        body = (
            <PageSection>
                <EmptyState>
                    <EmptyStateHeader titleText="Loading jobs" icon={<Spinner size="xl" aria-label="Loading jobs" />} headingLevel="h2" />
                </EmptyState>
            </PageSection>
        );
    } else {
        body = <JobsPage jobs={jobs} />;
    }

    return (
        <Page>
            <PageSection variant="light">
                <Title headingLevel="h1" id="page-title">VMware import</Title>
            </PageSection>
            {error && (
                <PageSection>
                    <ErrorAlert error={error} id="daemon-error" title="Cannot reach vm2kvmd" />
                </PageSection>
            )}
            {body}
        </Page>
    );
}
