#!/usr/bin/env python3
"""A Drover worker in Python, standard library only.

It speaks Drover's HTTP worker protocol (see README.md next to this file):
long-poll `POST /api/workers/fetch` for a batch of jobs, run each with a
handler that reports progress, writes log lines and emits a custom event,
then report the whole batch in one `POST /api/workers/ack`.

The toy handler upper-cases `payload["text"]`. Replace `handle` with your
own code; raise `Fatal` for errors no retry can fix, `RateLimited` to hand
the attempt back and retry later, any other exception for a retryable
failure.

    python3 worker.py --url http://127.0.0.1:8080 --queue demo --max-jobs 100 --idle-exit 30
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request


class Fatal(Exception):
    """A failure no retry can fix (bad payload, ...)."""


class RateLimited(Exception):
    """The handler hit a rate limit: retry after `after_ms`, attempt not spent."""

    def __init__(self, message, after_ms):
        super().__init__(message)
        self.after_ms = after_ms


class ApiError(Exception):
    """A 4xx/5xx answer, with the API's error code."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


class Drover:
    """The few calls a worker needs."""

    def __init__(self, url, worker_id, timeout_s=75):
        self.url = url.rstrip("/")
        self.worker_id = worker_id
        # Longer than the longest long poll (60 s), so a fetch is never cut short.
        self.timeout_s = timeout_s

    def call(self, path, body):
        data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                error = json.load(e)["error"]
                raise ApiError(e.code, error["code"], error["message"]) from None
            except (ValueError, KeyError):
                raise ApiError(e.code, "http_error", str(e)) from None

    def fetch(self, queues, max_jobs, wait_ms, lease_ms):
        body = {"worker_id": self.worker_id, "queues": queues, "max": max_jobs, "wait_ms": wait_ms, "lease_ms": lease_ms}
        return self.call("/api/workers/fetch", body)["items"]

    def ack(self, items):
        return self.call("/api/workers/ack", {"items": items})["items"]


class JobContext:
    """What a handler may report while it runs, under the job's lease."""

    def __init__(self, drover, job):
        self.drover = drover
        self.job = job
        self.path = "/api/jobs/" + urllib.request.quote(job["id"], safe="")

    def _report(self, route, body):
        body["lease_token"] = self.job["lease_token"]
        return self.drover.call(f"{self.path}/{route}", body)

    def progress(self, value):
        """A percentage (0-100) or {"total", "processed", "failed", "message"}."""
        self._report("progress", {"progress": value})

    def log(self, message, level="info", **metadata):
        self._report("logs", {"level": level, "message": message, "metadata": metadata})

    def emit(self, kind, data):
        """A custom event such as `demo:done`, delivered to SSE/WebSocket subscribers."""
        self._report("events", {"type": kind, "data": data})

    def heartbeat(self):
        """Extends the lease; True when the job was cancelled and should stop."""
        return self._report("heartbeat", {})["cancel_requested"]


def handle(job, ctx):
    """The toy handler: upper-cases payload["text"]."""
    payload = job.get("payload") or {}
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        raise Fatal('payload needs a "text" string')
    ctx.progress(50)
    ctx.log("upper-casing", length=len(text))
    result = {"text": text.upper(), "length": len(text)}
    ctx.progress(100)
    ctx.emit("demo:done", {"length": len(text)})
    return result


def run_one(drover, job, lease_ms, fetched_at):
    """Runs one job; its ack item, or None when its lease is already lost."""
    ctx = JobContext(drover, job)
    try:
        # Jobs of a batch run one after another: a job that waited a third
        # of its lease gets a heartbeat first, which also tells of a cancel.
        if (time.monotonic() - fetched_at) * 1000 > lease_ms / 3 and ctx.heartbeat():
            return {"id": job["id"], "lease_token": job["lease_token"], "error": {"message": "cancelled"}, "retryable": False}
        result = handle(job, ctx)
        return {"id": job["id"], "lease_token": job["lease_token"], "result": result}
    except ApiError as e:
        if e.code in ("lease_lost", "not_found"):
            print(f"job {job['id']}: {e}; dropping it", file=sys.stderr)
            return None
        return failure(job, e, retryable=True)
    except Fatal as e:
        return failure(job, e, retryable=False)
    except RateLimited as e:
        item = failure(job, e, retryable=True)
        item.update({"rate_limited": True, "retry_after_ms": e.after_ms})
        return item
    except Exception as e:  # noqa: BLE001 - any handler error is a retryable failure
        return failure(job, e, retryable=True)


def failure(job, error, retryable):
    details = {"type": type(error).__name__}
    return {"id": job["id"], "lease_token": job["lease_token"], "error": {"message": str(error), "details": details}, "retryable": retryable}


def main(argv=None):
    parser = argparse.ArgumentParser(description="A Drover worker over HTTP (standard library only).")
    parser.add_argument("--url", default=os.environ.get("DROVER_SERVER", "http://127.0.0.1:8080"))
    parser.add_argument("--queue", action="append", dest="queues", help="queue to serve (repeatable; default: default)")
    parser.add_argument("--worker-id", default=f"py-{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--batch", type=int, default=10, help="most jobs per fetch (1-1000)")
    parser.add_argument("--lease-ms", type=int, default=30000)
    parser.add_argument("--max-jobs", type=int, default=0, help="exit after this many jobs (0: never)")
    parser.add_argument("--idle-exit", type=float, default=0, help="exit after this many idle seconds (0: never)")
    args = parser.parse_args(argv)
    queues = args.queues or ["default"]
    drover = Drover(args.url, args.worker_id)

    done = 0
    idle_since = time.monotonic()
    while True:
        if args.max_jobs and done >= args.max_jobs:
            break
        idle = time.monotonic() - idle_since
        if args.idle_exit and idle >= args.idle_exit:
            print(f"idle for {idle:.1f} s; exiting", file=sys.stderr)
            break
        # Wait no longer than the idle budget left, so --idle-exit is honoured.
        wait_ms = 30000 if not args.idle_exit else max(0, min(30000, int((args.idle_exit - idle) * 1000)))
        want = args.batch if not args.max_jobs else max(1, min(args.batch, args.max_jobs - done))
        try:
            jobs = drover.fetch(queues, want, wait_ms, args.lease_ms)
        except (ApiError, OSError) as e:
            print(f"fetch failed: {e}; retrying in 1 s", file=sys.stderr)
            time.sleep(1)
            continue
        if not jobs:
            continue
        fetched_at = time.monotonic()
        items = [item for item in (run_one(drover, job, args.lease_ms, fetched_at) for job in jobs) if item]
        if items:
            for answer in drover.ack(items):
                if not answer["ok"]:
                    print(f"job {answer['id']}: {answer['error']['code']}: {answer['error']['message']}", file=sys.stderr)
        done += len(jobs)
        idle_since = time.monotonic()
    print(f"processed {done} jobs")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Jobs fetched but not acked come back when their lease runs out.
        sys.exit(130)
