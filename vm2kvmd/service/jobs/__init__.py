"""One conversion job, in parts that each do one thing.

* ``state``: ``JobStatus``, the state machine (states, phases, disks and progress, the
  result); no bus, no store, no event loop;
* ``persistence``: writes a job's status through to the job store, and rebuilds a
  finished job's status from its record;
* ``log``: the job's log lines (the daemon's log with journal fields, and the store);
* ``job``: ``Job``, a job that runs: its task, the runner's events, cancel, the end;
* ``dbus_object``: ``JobObject``, the exported ``org.vm2kvm.Job1`` object, a thin view of a
  ``Job`` (``progress``: the rate meter and the signal batcher it uses).
"""
