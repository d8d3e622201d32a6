#!/usr/bin/env python3
"""The crash tests' deploy platform, behind rollbackd's `command` provider.

It is the fake service's own deploy list (as in the demo's deploys.sh), with
gates a test holds to stop rollbackd at an exact point:

    gated_platform.py DIR URL list|status|rollback

A command waits while DIR/hold-NAME exists, after writing its pid to
DIR/waiting-NAME. The gates:

    list-in-run      a `list` asked while a rollback journal exists in
                     DIR/state/runs (the application phase's, before the call)
    rollback-before  before the rollback call reaches the platform
    rollback-after   after it did, before rollbackd hears the answer
    status           before answering a `status`

While DIR/list-late holds a number of seconds, `list` leaves out the
deployments created less than that long ago: a platform that lists a new
deployment late.
"""

import datetime
import glob
import json
import os
import sys
import time
import urllib.request


def gate(directory, name):
    hold = os.path.join(directory, "hold-" + name)
    if not os.path.exists(hold):
        return
    with open(os.path.join(directory, "waiting-" + name), "w") as f:
        f.write(str(os.getpid()))
    while os.path.exists(hold):
        time.sleep(0.05)


def fetch(url, method="GET"):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def main():
    directory, url, command = sys.argv[1], sys.argv[2], sys.argv[3]
    if command == "list":
        if glob.glob(os.path.join(directory, "state", "runs", "*.json")):
            gate(directory, "list-in-run")
        out = fetch(url + "/deployments")
        late = os.path.join(directory, "list-late")
        if os.path.exists(late):
            with open(late) as f:
                seconds = float(f.read())
            now = datetime.datetime.now(datetime.timezone.utc)
            listed = [
                d for d in json.loads(out)
                if (now - datetime.datetime.fromisoformat(d["created_at"].replace("Z", "+00:00"))).total_seconds() >= seconds
            ]
            out = json.dumps(listed)
    elif command == "status":
        gate(directory, "status")
        out = fetch(url + "/deployments/" + os.environ["ROLLBACKD_DEPLOYMENT_ID"])
    elif command == "rollback":
        gate(directory, "rollback-before")
        out = fetch(url + "/deployments/" + os.environ["ROLLBACKD_DEPLOYMENT_ID"] + "/rollback", "POST")
        gate(directory, "rollback-after")
    else:
        sys.exit("usage: gated_platform.py DIR URL list|status|rollback")
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
