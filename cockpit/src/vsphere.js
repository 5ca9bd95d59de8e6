// ESXi and vCenter sources: through vm2kvmctl, spawned by Cockpit's bridge, not through the
// D-Bus channel.  vm2kvmd takes a vSphere password only as a file descriptor (D-Bus "h"), which
// Cockpit's channel cannot carry; vm2kvmctl reads it from its stdin ("--password-file -") and
// hands vm2kvmd a pipe.  The password is never in argv, the environment or the URI
// (docs/decisions.md, issue 14).
const cockpit = window.cockpit;

const CTL = 'vm2kvmctl';
const ERROR_PREFIX = 'vm2kvmctl: error: ';
const THUMBPRINT = /thumbprint (?:is )?((?:[0-9A-F]{2}:){31}[0-9A-F]{2})/i;

export const TLS_VERIFY = 'verify';
export const TLS_PIN = 'pin';
export const TLS_NO_VERIFY = 'no-verify';

// The source URI vm2kvmctl gets: what the user typed (a host alone means esx://HOST/), the user
// name of the form in place of any in the URI, and no_verify=1 when the user chose it.
export function sourceUri({ uri, user, tls }) {
    let text = uri.trim();
    if (!text)
        return '';
    if (!text.includes('://'))
        text = `esx://${text}`;
    const match = /^([a-z]+):\/\/(?:[^@/?]*@)?(.*)$/.exec(text);
    if (!match)
        return text;
    const [, scheme, rest] = match;
    let where = rest;
    if (scheme === 'esx' && !where.includes('/'))
        where = where.includes('?') ? where.replace('?', '/?') : `${where}/`;
    const login = user.trim() ? `${encodeURIComponent(user.trim())}@` : '';
    let out = `${scheme}://${login}${where}`;
    if (tls === TLS_NO_VERIFY && !/[?&]no_verify=1\b/.test(out))
        out += `${out.includes('?') ? '&' : '?'}no_verify=1`;
    return out;
}

// The URI's host (and port) alone, for headings.
export function hostOf(uri) {
    const match = /^[a-z]+:\/\/(?:[^@/?]*@)?([^/?]*)/.exec(uri);
    return match ? match[1] : uri;
}

// "--opt=value" throughout: a value that starts with "-" (a VM or network name) stays a value.
function connectionArgs(conn) {
    const args = ['--password-file', '-'];
    if (conn.tls === TLS_PIN && conn.thumbprint.trim())
        args.push(`--thumbprint=${conn.thumbprint.trim()}`);
    return args;
}

// The page's options (newmigration.jsx) as vm2kvmctl's; only what the user set.
export function optionArgs(options, { migrate = false } = {}) {
    const args = [];
    for (const key of ['name', 'pool', 'format']) {
        if (options[key])
            args.push(`--${key}=${options[key]}`);
    }
    for (const key of ['network', 'bridge']) {
        for (const entry of options[key] || [])
            args.push(`--${key}=${entry}`);
    }
    if (options['guest-conversion'] === false)
        args.push('--no-guest-conversion');
    if (migrate) {
        if (options.verify)
            args.push('--verify');
        if (options['shutdown-source'])
            args.push('--shutdown-source');
        if (options.force)
            args.push('--force');
    }
    return args;
}

// vm2kvmctl's failure as the page shows a D-Bus refusal: its --json error carries vm2kvmd's
// error name; otherwise its one line and exit status.
export function ctlError(ex, stdout) {
    if (ex && ex.problem) {
        const message = ex.problem === 'not-found'
            ? 'vm2kvmctl is not installed on this host (it comes with vm2kvm, as /usr/bin/vm2kvmctl)'
            : cockpit.message(ex);
        return { problem: ex.problem, message };
    }
    try {
        const { error } = JSON.parse(stdout || '');
        if (error && error.name)
            return { name: error.name, message: error.message };
    } catch (_e) {
        // no JSON: a usage error (exit 2) has only its line on stderr
    }
    const line = String((ex && ex.message) || '').trim()
            .split('\n')
            .filter(Boolean)
            .pop() || 'vm2kvmctl failed';
    return {
        message: line.startsWith(ERROR_PREFIX) ? line.slice(ERROR_PREFIX.length) : line,
        exit_status: ex ? ex.exit_status : undefined,
    };
}

// The server's thumbprint a certificate error names (to offer pinning it), else null.
export function serverThumbprint(err) {
    const code = (err && err.name) || '';
    if (!code.endsWith('.CertificateNotTrusted') && !code.endsWith('.CertificateMismatch'))
        return null;
    const match = THUMBPRINT.exec(err.message || '');
    return match ? match[1].toUpperCase() : null;
}

function run(args, password) {
    return new Promise((resolve, reject) => {
        // cockpit's own promise: its rejection also gives stdout (the --json error)
        const proc = cockpit.spawn([CTL, '--json', ...args], { err: 'message', superuser: 'try' });
        proc.then(out => resolve(JSON.parse(out)), (ex, out) => reject(ctlError(ex, out)));
        proc.input(password);
    });
}

export function listVms(conn) {
    return run(['list-vms', sourceUri(conn), ...connectionArgs(conn)], conn.password);
}

export function inspectVm(conn, vm, options) {
    return run(['inspect', sourceUri(conn), `--vm=${vm}`, ...connectionArgs(conn), ...optionArgs(options)],
               conn.password);
}

// A job whose Source is "URI#VM" (vm2kvmd's job_source): its Retry needs the password again.
export function isVsphereJob(job) {
    return /^(esx|vpx):\/\/[^#]*#./.test((job && job.Source) || '');
}

// `vm2kvmctl retry N`: the new job's number.  The URI (and its no_verify) is the job's; a pin
// is not stored with the job, so it is given again.
export function retryJob(number, { password, thumbprint }) {
    const args = ['retry', String(number), '--detach', '--password-file', '-'];
    if (thumbprint.trim())
        args.push(`--thumbprint=${thumbprint.trim()}`);
    return run(args, password).then(({ number: next }) => next);
}

// The new job's number: the job then shows in the table from the daemon's signals.
export function migrateVm(conn, vm, options) {
    const args = ['migrate', sourceUri(conn), `--vm=${vm}`, '--detach', ...connectionArgs(conn),
        ...optionArgs(options, { migrate: true })];
    return run(args, conn.password).then(({ number }) => number);
}
