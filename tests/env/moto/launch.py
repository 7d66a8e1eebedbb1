#!/usr/bin/env python3
"""moto's server for the local test environment, with one SWF fix.

Usage: launch.py [--host 127.0.0.1] [--port N]   (port 0 picks a free one)
Prints `ready http://HOST:PORT` on stdout once the server answers HTTP, then serves
until SIGTERM/SIGINT. Request logging is off; errors still go to stderr.

The fix. moto 5.2.5's SWFResponse.signal_workflow_execution reads the optional `input`
member as `self._params["input"]`. A SignalWorkflowExecution without input (legal: the
model marks it optional, and the AWS SDKs omit unset members) raises KeyError there,
and the server turns that into HTTP 500. The rest of moto already copes with a missing
input: the backend takes `workflow_input=None`, and HistoryEvent leaves falsy attributes
out, so the WorkflowExecutionSignaled event then has no `input`, as in real SWF. Only
that one handler is replaced: it reads `input` (and `runId`) with `.get`, and keeps
moto's own type checks and backend call.
"""

import argparse
import http.client
import logging
import signal
import sys
import threading
import time

from moto.swf.responses import SWFResponse
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def signal_workflow_execution(self):
    params = self._params
    domain, name, workflow_id = params["domain"], params["signalName"], params["workflowId"]
    workflow_input, run_id = params.get("input"), params.get("runId")
    for value in (domain, name, workflow_id):
        self._check_string(value)
    self._check_none_or_string(workflow_input)
    self._check_none_or_string(run_id)
    self.swf_backend.signal_workflow_execution(domain, name, workflow_id, workflow_input, run_id)
    return ""


SWFResponse.signal_workflow_execution = signal_workflow_execution


class QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def answers(host, port):
    try:
        conn = http.client.HTTPConnection(host, port, timeout=1)
        conn.request("GET", "/moto-api/")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=QuietHandler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    deadline = time.monotonic() + 60
    while not answers(args.host, port):
        if time.monotonic() > deadline:
            sys.exit("moto did not answer within 60s")
        time.sleep(0.05)
    print(f"ready http://{args.host}:{port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
