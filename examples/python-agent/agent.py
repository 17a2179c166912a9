#!/usr/bin/env python3
"""An agent in Python that asks toolgate before it sends an email.

It uses only Python's standard library: toolgate's API is plain HTTP and
JSON, so any language can do the same.

    TOOLGATE_URL=http://127.0.0.1:8080 TOOLGATE_TOKEN=tg_... python3 agent.py sally@gmail.com

The agent asks for approval of its call and waits for the decision in the
same request (`?wait=30s`: it answers as soon as someone decides, or after
30 seconds with the call still pending, and then the agent waits again on
the approval's URL). It acts on the decision: it sends the email (with the
arguments the approver left, which may be edited) only if the call was
approved, and otherwise reports why not. Exit status: 0 sent, 3 not
approved, 1 an error.
"""

import json
import os
import sys
import urllib.error
import urllib.request

BASE = os.environ.get("TOOLGATE_URL", "http://127.0.0.1:8080").rstrip("/")

SCHEMA = {
    "type": "object",
    "properties": {
        "recipient": {"type": "string"},
        "message": {"type": "string"},
    },
    "required": ["recipient", "message"],
    "additionalProperties": False,
}


class ToolgateError(Exception):
    """A request toolgate refused: its problem document's detail."""


def call(method, path, body=None):
    """One request to toolgate; the JSON it answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + os.environ["TOOLGATE_TOKEN"])
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        problem = json.load(error)
        raise ToolgateError(f"{problem['status']} {problem['title']}: {problem['detail']}")


def send_email(recipient, message):
    """The tool: here it only says what it would do."""
    print(f"Successfully sent email to {recipient}.", flush=True)


def main():
    recipient = sys.argv[1] if len(sys.argv) > 1 else "sally@gmail.com"
    args = {"recipient": recipient, "message": "What's up homie"}
    approval = call("POST", "/v1/approvals?wait=30s", {
        "tool": "send_email",
        "args": args,
        "schema": SCHEMA,
        "description": "Sends an email.",
        "context": {"agent": "python-agent", "why": "the user asked to greet " + recipient},
    })
    while approval["status"] == "pending":
        approval = call("GET", f"/v1/approvals/{approval['id']}?wait=30s")
    print(f"asked: approval {approval['id']} is {approval['status']}", flush=True)
    if approval["status"] in ("approved", "edited"):
        send_email(**approval["args"])
        return 0
    print(f"not sent ({approval['status']}): {approval['message']}", flush=True)
    return 3


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ToolgateError, urllib.error.URLError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
