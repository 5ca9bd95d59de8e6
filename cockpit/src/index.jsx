import '@patternfly/patternfly/patternfly.css';
import '@patternfly/patternfly/patternfly-addons.css';
import './app.css';

import React from 'react';
import { createRoot } from 'react-dom/client';

import { App } from './app.jsx';

document.addEventListener('DOMContentLoaded', () => {
    createRoot(document.getElementById('app')).render(<App />);
});
