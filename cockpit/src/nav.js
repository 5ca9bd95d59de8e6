import { useEffect, useState } from 'react';

const cockpit = window.cockpit;

// Routes (cockpit.location, the part after "#"): []: the jobs; ["new"]: a new migration;
// ["job", N]: one job.  Cockpit keeps them in the shell's URL, so Back and bookmarks work.
export function useLocation() {
    const [path, setPath] = useState(cockpit.location.path);
    useEffect(() => {
        const changed = () => setPath(cockpit.location.path);
        cockpit.addEventListener('locationchanged', changed);
        return () => cockpit.removeEventListener('locationchanged', changed);
    }, []);
    return path;
}

export function go(path) {
    cockpit.location.go(path);
}
