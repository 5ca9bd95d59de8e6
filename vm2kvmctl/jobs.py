"""The job-keeping commands: jobs, retry, dismiss, logs."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any, Final

from vm2kvmctl import joblog, output, vsphere
from vm2kvmctl.client import Client, job_number
from vm2kvmctl.common import EXIT_FAILED, EXIT_OK, Context, error_line, parse_job
from vm2kvmctl.follow import CtrlC, ctrl_c_policy, follow_and_report
from vm2kvmctl.joblog import JournalUnavailable, LogLine
from vm2kvmd.core.vsphere.uri import split_job_source

FOLLOW_POLL: Final = 0.5  # seconds between looks for new log lines with --follow


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """The commands of this module, on the ``commands`` subparsers of the main parser."""
    jobs = commands.add_parser("jobs", parents=[common], help="list jobs")
    jobs.add_argument("--all", action="store_true", help="list dismissed jobs too")
    jobs.set_defaults(func=cmd_jobs)

    retry = commands.add_parser(
        "retry", parents=[common], help="start a failed or cancelled job again, as a new job"
    )
    retry.add_argument("job", metavar="JOB", help="job number or object path")
    retry.add_argument("--detach", action="store_true", help="start the new job and exit")
    vsphere.add_credential_options(retry)
    retry.set_defaults(func=cmd_retry)

    dismiss = commands.add_parser("dismiss", parents=[common], help="hide a finished job from vm2kvmctl jobs")
    dismiss.add_argument("job", metavar="JOB", help="job number or object path")
    dismiss.set_defaults(func=cmd_dismiss)

    logs = commands.add_parser("logs", parents=[common], help="show a job's log")
    logs.add_argument("job", metavar="JOB", help="job number or object path")
    logs.add_argument(
        "--source",
        choices=("auto", "journal", "store"),
        default="auto",
        help="journal: the system journal; store: the daemon's job store; "
        "auto (default): the journal if it has the job's lines, else the store",
    )
    logs.add_argument(
        "--journal-namespace",
        metavar="NAMESPACE",
        help="read this journal namespace instead of the system journal "
        "(for a vm2kvmd unit with LogNamespace=)",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the job ends"
    )
    logs.set_defaults(func=cmd_logs)


async def cmd_jobs(ctx: Context, client: Client) -> int:
    jobs = await client.jobs()
    shown = jobs if ctx.args.all else {path: p for path, p in jobs.items() if not p.get("Dismissed")}
    if ctx.json:
        ctx.print_json([output.job_json(path, props) for path, props in shown.items()])
    else:
        output.jobs_table(ctx.out, shown, hidden=len(jobs) - len(shown))
    return EXIT_OK


async def _retry(ctx: Context, client: Client, path: str) -> str:
    """Retry, or for a job whose source is on vSphere RetryRemote with the password asked again."""
    args = ctx.args
    source = str((await client.job(path)).get("Source", ""))
    remote = split_job_source(source)
    if remote is None:
        return await client.retry(path)
    uri = vsphere.parse_source_uri(remote[0])
    tls = vsphere.tls_options(args)
    return await vsphere.call_with_password(args, uri, lambda fd: client.retry_remote(path, tls, fd))


async def cmd_retry(ctx: Context, client: Client) -> int:
    path = parse_job(ctx.args.job)
    number = job_number(path)
    if ctx.args.detach:
        new_path = await _retry(ctx, client, path)
        new = job_number(new_path)
        if ctx.json:
            ctx.print_json({"job": new_path, "number": new, "retry_of": number})
        else:
            ctx.out.print(
                f"Retrying job {number} as job {new} ({new_path}); follow it with: vm2kvmctl watch {new}",
                highlight=False,
                markup=False,
            )
        return EXIT_OK
    signals = await client.subscribe()  # before Retry: no update can be missed
    with CtrlC(signals):
        new_path = await _retry(ctx, client, path)
        if not ctx.json:
            ctx.err.print(
                f"Retrying job {number} as job {job_number(new_path)}", highlight=False, markup=False
            )
        return await follow_and_report(ctx, client, new_path, on_interrupt=ctrl_c_policy())


async def cmd_dismiss(ctx: Context, client: Client) -> int:
    path = parse_job(ctx.args.job)
    number = job_number(path)
    await client.dismiss(path)
    if ctx.json:
        ctx.print_json({"job": path, "number": number, "dismissed": True})
    else:
        ctx.out.print(
            f"Job {number} dismissed; vm2kvmctl jobs --all still lists it.", highlight=False, markup=False
        )
    return EXIT_OK


# --- logs ------------------------------------------------------------------------------


class StoreLog:
    """The job's log as the daemon stores it (``Job1.GetLog``)."""

    name = "store"

    def __init__(self, client: Client, path: str) -> None:
        self._client = client
        self._path = path
        self._seen = 0

    async def read(self) -> list[LogLine]:
        """The lines not read before (the store only ever appends)."""
        lines = joblog.from_store(await self._client.log(self._path))
        new, self._seen = lines[self._seen :], len(lines)
        return new

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def close(self) -> None:
        pass


class JournalLog:
    """The job's entries in the system journal; the reader stays open for ``--follow``."""

    name = "journal"

    def __init__(self, reader: Any, number: int, since: int) -> None:
        self._reader = reader
        self._number = number
        self._since = since

    @classmethod
    async def open(cls, number: int, since: int, namespace: str | None) -> JournalLog:
        reader = await asyncio.to_thread(joblog.open_journal, number, since, namespace)
        return cls(reader, number, since)

    async def read(self) -> list[LogLine]:
        try:
            return await asyncio.to_thread(joblog.read_entries, self._reader, self._number, self._since)
        except OSError as exc:
            raise JournalUnavailable(f"cannot read the system journal: {exc.strerror or exc}") from None

    async def wait(self, seconds: float) -> None:
        await asyncio.to_thread(self._reader.wait, seconds)

    def close(self) -> None:
        self._reader.close()


LogSource = StoreLog | JournalLog


async def _pick_source(
    ctx: Context, client: Client, path: str, since: int
) -> tuple[LogSource, list[LogLine]] | None:
    """The source ``--source`` asks for, and its lines so far; ``None`` after an error line."""
    number = job_number(path)
    wanted = ctx.args.source
    if wanted in ("auto", "journal"):
        try:
            journal = await JournalLog.open(number, since, ctx.args.journal_namespace)
        except JournalUnavailable as exc:
            if wanted == "journal":
                error_line(f"{exc}; vm2kvmctl logs --source store {number} shows the daemon's copy")
                return None
        else:
            lines = await journal.read()
            if lines:
                return journal, lines
            journal.close()
            if wanted == "journal":
                namespace = ctx.args.journal_namespace
                what = f"journal namespace {namespace}" if namespace else "system journal"
                error_line(
                    f"the {what} has no lines of vm2kvmd about job {number} (vm2kvmd does not log "
                    "to it here, or you may not read it); "
                    f"vm2kvmctl logs --source store {number} shows the daemon's copy"
                )
                return None
    store = StoreLog(client, path)
    return store, await store.read()


def _print_lines(ctx: Context, lines: list[LogLine]) -> None:
    for line in lines:
        ctx.out.print(line.text(), highlight=False, markup=False, soft_wrap=True)


async def cmd_logs(ctx: Context, client: Client) -> int:
    path = parse_job(ctx.args.job)
    props = await client.job(path)  # no such job: the daemon's error
    picked = await _pick_source(ctx, client, path, int(props.get("CreateTime", 0)))
    if picked is None:
        return EXIT_FAILED
    source, lines = picked
    try:
        if not ctx.args.follow:
            if ctx.json:
                ctx.print_json([line.to_json() for line in lines])
            else:
                _print_lines(ctx, lines)
            return EXIT_OK
        # --json --follow: one JSON object a line, as they come.
        emit = _print_json_lines if ctx.json else _print_lines
        emit(ctx, lines)
        while (await client.job(path)).get("State") not in output.FINISHED:
            await source.wait(FOLLOW_POLL)
            emit(ctx, await source.read())
        if isinstance(source, JournalLog):
            await source.wait(FOLLOW_POLL)  # journald writes what was sent as the job ended a bit later
        emit(ctx, await source.read())  # what was logged while it ended
        return EXIT_OK
    finally:
        source.close()


def _print_json_lines(ctx: Context, lines: list[LogLine]) -> None:
    for line in lines:
        ctx.out.out(json.dumps(line.to_json()), highlight=False)
