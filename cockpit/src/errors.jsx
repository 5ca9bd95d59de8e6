import React from 'react';
import { Alert, AlertActionCloseButton } from '@patternfly/react-core';

import { describeError } from './dbus.js';

// A D-Bus error as its readable message with the code; a polkit refusal also says what to do.
// children: actions that may help (a "Pin this thumbprint" button).
export function ErrorAlert({ error, title, id, onClose, children }) {
    if (!error)
        return null;
    const { code, message, hint } = describeError(error);
    const close = onClose
        ? { actionClose: <AlertActionCloseButton onClose={onClose} aria-label="Close error" /> }
        : {};
    return (
        <Alert variant="danger" isInline title={title || message} id={id}
               data-error-code={code} {...close}>
            {title && <p className="vm2kvm-error-message">{message}</p>}
            {code && <p>Error code: <code>{code}</code></p>}
            {hint && <p>{hint}</p>}
            {children}
        </Alert>
    );
}
