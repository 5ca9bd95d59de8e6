// Numbers as the page shows them (binary units, as vm2kvmctl does).
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
    let value = Number(n) || 0;
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
        value /= 1024;
        unit++;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

export function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60)
        return `${s} s`;
    if (s < 3600)
        return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// µs since the epoch -> local date and time; 0 means "not yet".
export function time(us) {
    if (!us)
        return '';
    return new Date(Number(us) / 1000).toLocaleString();
}

// "12.3 MiB/s, 1 min 5 s left" for a running copy; "" when there is nothing to say.
export function rateAndEta(props, nowMs) {
    const parts = [];
    if (props.State === 'running' && props.Rate > 0)
        parts.push(`${bytes(props.Rate)}/s`);
    if (props.State === 'running' && props.ExpectedEndTime > 0) {
        const left = Number(props.ExpectedEndTime) / 1e6 - nowMs / 1000;
        if (left >= 1)
            parts.push(`${duration(left)} left`);
    }
    return parts.join(', ');
}

export function basename(path) {
    return String(path || '').replace(/\/+$/, '').split('/').pop();
}

// A job's source in a table cell: the file's name, or "VM on HOST" for vm2kvmd's "URI#VM".
export function sourceName(source) {
    const match = /^(?:esx|vpx):\/\/(?:[^@/?#]*@)?([^/?#]*)[^#]*#(.+)$/.exec(String(source || ''));
    return match ? `${match[2]} on ${match[1]}` : basename(source);
}
