// Everything the page says to vm2kvmd through Cockpit's D-Bus channel on the system bus
// (docs/dbus-api.md).  The only other way is vsphere.js (a password must travel as an fd).
const cockpit = window.cockpit;

export const BUS_NAME = 'org.vm2kvm.Daemon1';
export const MANAGER_PATH = '/org/vm2kvm/Daemon1';
export const MANAGER_IFACE = 'org.vm2kvm.Manager1';
export const JOB_IFACE = 'org.vm2kvm.Job1';
export const JOBS_PATH = '/org/vm2kvm/Daemon1/jobs';
const PROPS_IFACE = 'org.freedesktop.DBus.Properties';
const OM_IFACE = 'org.freedesktop.DBus.ObjectManager';

// Inspecting an OVA reads the whole archive's index; the channel's default would give up first.
const LONG_CALL_MS = 10 * 60 * 1000;

let client = null;

// "try": with Cockpit's administrative access turned on the calls come from root (always
// allowed by vm2kvmd); without it they are the logged-in user's, and polkit decides.
export function connect() {
    if (!client)
        client = cockpit.dbus(BUS_NAME, { bus: 'system', superuser: 'try' });
    return client;
}

export function jobNumber(path) {
    return Number(path.slice(path.lastIndexOf('/') + 1));
}

export function jobPath(number) {
    return `${JOBS_PATH}/${number}`;
}

// A variant as the channel gives it ({t, v}) -> the plain value, also inside a{sv} and av
// (a job's Options), so signals give what ListJobs gives.
export function plain(value) {
    if (!(value && typeof value === 'object' && 't' in value && 'v' in value))
        return value;
    const { t, v } = value;
    if (t === 'v')
        return plain(v);
    if (t === 'av')
        return v.map(plain);
    if (t.startsWith('a{') && t.endsWith('v}'))
        return Object.fromEntries(Object.entries(v).map(([key, inner]) => [key, plain(inner)]));
    return v;
}

export function plainProps(props) {
    const out = {};
    for (const [name, value] of Object.entries(props))
        out[name] = plain(value);
    return out;
}

function call(path, iface, method, args, type, timeout) {
    const options = { type };
    if (timeout)
        options.timeout = timeout;
    return connect().call(path, iface, method, args, options);
}

export function listJobs() {
    return call(MANAGER_PATH, MANAGER_IFACE, 'ListJobs', [], '').then(([text]) => JSON.parse(text));
}

// options: {key: {t, v}} (a{sv}); see variantOptions.
export function inspect(source, options) {
    return call(MANAGER_PATH, MANAGER_IFACE, 'Inspect', [source, options || {}], 'sa{sv}', LONG_CALL_MS)
            .then(([text]) => JSON.parse(text));
}

export function migrate(source, options) {
    return call(MANAGER_PATH, MANAGER_IFACE, 'Migrate', [source, options], 'sa{sv}', LONG_CALL_MS)
            .then(([path]) => path);
}

export function listPoolsAndNetworks() {
    return call(MANAGER_PATH, MANAGER_IFACE, 'ListPoolsAndNetworks', [{}], 'a{sv}', LONG_CALL_MS)
            .then(([text]) => JSON.parse(text));
}

export function jobAction(number, method) {
    return call(jobPath(number), JOB_IFACE, method, [], '');
}

export function getLog(number) {
    return call(jobPath(number), JOB_IFACE, 'GetLog', [], '').then(([lines]) => lines);
}

export function getReport(number) {
    return call(jobPath(number), JOB_IFACE, 'GetReport', [], '').then(([text]) => JSON.parse(text));
}

// The page's options as the a{sv} Migrate takes: only keys the user set.
export function variantOptions(options) {
    const out = {};
    for (const [key, value] of Object.entries(options)) {
        if (value === undefined || value === null || value === '')
            continue;
        if (Array.isArray(value)) {
            if (value.length)
                out[key] = { t: 'as', v: value };
        } else if (typeof value === 'boolean') {
            out[key] = { t: 'b', v: value };
        } else {
            out[key] = { t: 's', v: String(value) };
        }
    }
    return out;
}

// Follows the jobs: calls onChange(path, props) with the changed (plain) properties,
// onRemoved(path), onCompleted(path, success, message), onOwner(owner|null) when the daemon
// comes or goes, onClose(problem) when Cockpit's channel to the bus closes.  Subscribed before
// anything is read, as docs/dbus-api.md asks.
export function followJobs({ onChange, onRemoved, onCompleted, onOwner, onClose }) {
    const c = connect();
    const subs = [
        c.subscribe({ interface: PROPS_IFACE, member: 'PropertiesChanged', path_namespace: JOBS_PATH },
                    (path, _iface, _signal, [iface, changed]) => {
                        if (iface === JOB_IFACE)
                            onChange(path, plainProps(changed));
                    }),
        c.subscribe({ interface: JOB_IFACE, member: 'Completed', path_namespace: JOBS_PATH },
                    (path, _iface, _signal, [success, message]) => onCompleted(path, success, message)),
        c.subscribe({ interface: OM_IFACE, member: 'InterfacesAdded', path: MANAGER_PATH },
                    (_path, _iface, _signal, [path, ifaces]) => {
                        if (ifaces[JOB_IFACE])
                            onChange(path, plainProps(ifaces[JOB_IFACE]));
                    }),
        c.subscribe({ interface: OM_IFACE, member: 'InterfacesRemoved', path: MANAGER_PATH },
                    (_path, _iface, _signal, [path, ifaces]) => {
                        if (ifaces.includes(JOB_IFACE))
                            onRemoved(path);
                    }),
    ];
    const owner = (_event, name) => onOwner(name);
    const close = (_event, options) => {
        client = null; // a later connect() opens a new channel
        onClose(options || {});
    };
    c.addEventListener('owner', owner);
    c.addEventListener('close', close);
    return () => {
        subs.forEach(s => s.remove());
        c.removeEventListener('owner', owner);
        c.removeEventListener('close', close);
    };
}

// A refusal or failure as the user should read it.
export function describeError(err) {
    const name = (err && err.name) || '';
    const message = (err && (err.message || err.problem)) || String(err);
    let code = '';
    if (name.startsWith('org.vm2kvm.Error.'))
        code = name.slice('org.vm2kvm.Error.'.length);
    else if (name)
        code = name;
    else if (err && err.exit_status !== undefined)
        code = `vm2kvmctl exit status ${err.exit_status}`; // vsphere.js: a failure without an error name
    else if (err && err.problem)
        code = err.problem;
    let hint = '';
    if (code === 'NotAuthorized' || code === 'access-denied' || name === 'org.freedesktop.DBus.Error.AccessDenied')
        hint = 'vm2kvm asks polkit whether you may do this. Turn on administrative access ' +
               '(the "Limited access" button at the top of Cockpit) or ask an administrator.';
    else if (name === 'org.freedesktop.DBus.Error.ServiceUnknown' || name === 'org.freedesktop.DBus.Error.NameHasNoOwner')
        hint = 'vm2kvmd is not running on this host. Start it with "systemctl start vm2kvmd".';
    else if (name === 'org.freedesktop.DBus.Error.UnknownMethod')
        hint = 'The running vm2kvmd is older than this page.';
    else if (!name && err && err.problem)
        hint = window.cockpit.message(err);
    return { code, message, hint };
}
