import React, { useEffect, useState } from 'react';
import {
    Alert, Button, DataList, DataListCell, DataListItem, DataListItemCells, DataListItemRow,
    Modal, Spinner, Text, TextInput,
} from '@patternfly/react-core';
import { FolderIcon, FileIcon } from '@patternfly/react-icons';

const SOURCE_FILE = /\.(vmx|ovf|ova)$/i;

export function isSourceFile(name) {
    return SOURCE_FILE.test(name);
}

// "/srv//vm/" -> "/srv/vm": what the user typed, as one spelling.
function normalize(dir) {
    const clean = dir.trim().replace(/\/+/g, '/').replace(/(.)\/$/, '$1');
    return clean.startsWith('/') ? clean : `/${clean}`;
}

function parent(dir) {
    const up = dir.replace(/\/+$/, '').replace(/\/[^/]*$/, '');
    return up || '/';
}

function join(dir, name) {
    return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

// The entries of a host directory through the bridge (find -printf: the type a symlink points
// to, then the name): directories and VMware files only.  "try": with administrative access
// the page sees what root sees, as vm2kvmd reading the file for root would.
function listDirectory(dir) {
    return window.cockpit.spawn(['find', dir, '-mindepth', '1', '-maxdepth', '1', '-printf', '%Y\\t%f\\n'],
                                { superuser: 'try', err: 'message' })
            .then(out => out.split('\n').filter(Boolean)
                    .map(line => {
                        const tab = line.indexOf('\t');
                        return { type: line.slice(0, tab), name: line.slice(tab + 1) };
                    })
                    .filter(e => !e.name.startsWith('.') &&
                                 (e.type === 'd' || (e.type === 'f' && isSourceFile(e.name))))
                    .sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === 'd' ? -1 : 1)));
}

// A simple file browser: walk directories, pick a .vmx, .ovf or .ova.
export function FileBrowser({ start, onSelect, onClose }) {
    const [dir, setDirectory] = useState(normalize(start || '/'));
    const setDir = next => setDirectory(normalize(next));
    const [typed, setTyped] = useState(start || '/');
    const [entries, setEntries] = useState(null);
    const [error, setError] = useState(null);

    useEffect(() => {
        setEntries(null);
        setError(null);
        setTyped(dir);
        listDirectory(dir).then(setEntries)
                .catch(err => setError(err.message || String(err)));
    }, [dir]);

    const open = entry => {
        const path = join(dir, entry.name);
        if (entry.type === 'd')
            setDir(path);
        else
            onSelect(path);
    };

    return (
        <Modal variant="medium" title="Choose a VMware file" isOpen onClose={onClose} id="file-browser"
               actions={[<Button key="cancel" variant="link" onClick={onClose}>Cancel</Button>]}>
            <form onSubmit={e => { e.preventDefault(); setDir(typed || '/') }}>
                <TextInput aria-label="Directory" id="browser-directory" value={typed}
                           onChange={(_e, v) => setTyped(v)} />
            </form>
            <Button variant="link" id="browser-up" isDisabled={dir === '/'} onClick={() => setDir(parent(dir))}>
                Parent directory
            </Button>
            {error && <Alert variant="warning" isInline title={`Cannot list ${dir}`}>{error}</Alert>}
            {!error && entries === null && <Spinner size="lg" aria-label="Reading the directory" />}
            {entries && entries.length === 0 && <Text>No directories or .vmx, .ovf or .ova files here.</Text>}
            {entries && entries.length > 0 && (
                <div className="vm2kvm-browser-list">
                    <DataList aria-label="Files" isCompact id="browser-entries">
                        {entries.map(entry => (
                            <DataListItem key={entry.name} aria-labelledby={`entry-${entry.name}`}>
                                <DataListItemRow>
                                    <DataListItemCells dataListCells={[
                                        <DataListCell key="name">
                                            <Button variant="link" isInline id={`entry-${entry.name}`}
                                                    icon={entry.type === 'd' ? <FolderIcon /> : <FileIcon />}
                                                    onClick={() => open(entry)}>
                                                {entry.name}
                                            </Button>
                                        </DataListCell>,
                                    ]} />
                                </DataListItemRow>
                            </DataListItem>
                        ))}
                    </DataList>
                </div>
            )}
        </Modal>
    );
}
