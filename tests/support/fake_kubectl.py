#!/usr/bin/env python3
"""A fake `kubectl` (and `flux`) for the rollout-undo recipe's test: the
state is a JSON file (FAKE_KUBE_STATE) holding one Deployment and its
ReplicaSets, shaped as the API server returns them (apps/v1); every call
is appended to FAKE_KUBE_LOG.

    kubectl [--namespace NS] get deployment NAME -o json
    kubectl [--namespace NS] get replicasets -l K=V,... -o json
    kubectl [--namespace NS] rollout undo deployment/NAME --to-revision=N
    flux suspend kustomization|helmrelease NAME [--namespace NS]

`rollout undo` does what the Deployment controller does: the target's
ReplicaSet gets the next revision number (kubectl's `rollout undo`
documentation; the controller's `deployment.kubernetes.io/revision`), an
unknown revision is refused with kubectl's message.
"""

import json
import os
import sys

REVISION = "deployment.kubernetes.io/revision"


def main():
    state_path = os.environ["FAKE_KUBE_STATE"]
    with open(os.environ["FAKE_KUBE_LOG"], "a") as log:
        log.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")
    if os.path.basename(sys.argv[0]).startswith("flux"):
        return
    args = sys.argv[1:]
    if args[:1] == ["--namespace"]:
        args = args[2:]
    with open(state_path) as f:
        state = json.load(f)
    deployment, sets = state["deployment"], state["replicasets"]
    if args[:2] == ["get", "deployment"]:
        if args[2] != deployment["metadata"]["name"]:
            sys.exit(f'Error from server (NotFound): deployments.apps "{args[2]}" not found')
        print(json.dumps(deployment))
    elif args[:2] == ["get", "replicasets"]:
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": sets}))
    elif args[:2] == ["rollout", "undo"]:
        wanted = args[3].split("=", 1)[1]
        target = [rs for rs in sets if rs["metadata"]["annotations"][REVISION] == wanted]
        if not target:
            sys.exit(f"error: unable to find specified revision {wanted} in history")
        nxt = str(max(int(rs["metadata"]["annotations"][REVISION]) for rs in sets) + 1)
        target[0]["metadata"]["annotations"][REVISION] = nxt
        deployment["metadata"]["annotations"][REVISION] = nxt
        deployment["metadata"]["generation"] += 1
        deployment["status"]["observedGeneration"] = deployment["metadata"]["generation"]
        with open(state_path, "w") as f:
            json.dump(state, f)
        print(f"deployment.apps/{deployment['metadata']['name']} rolled back")
    else:
        sys.exit(f"fake kubectl: unsupported {args}")


if __name__ == "__main__":
    main()
