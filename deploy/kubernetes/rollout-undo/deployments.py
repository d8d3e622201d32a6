#!/usr/bin/env python3
"""rollbackd's `command` provider for a plain Kubernetes Deployment, with
or without Flux in front of it.

    deployments.py list|status|rollback

Deployments are the Deployment's ReplicaSets, by their
`deployment.kubernetes.io/revision`: the current revision is what runs
(SUCCESS once the rollout is complete, DEPLOYING before), older ones can be
rolled back to (REMOVED). A rollback is `kubectl rollout undo
--to-revision=N`; Kubernetes gives the target's ReplicaSet the next
revision number, which rollbackd finds as the new deployment.

With Flux managing the Deployment, set FLUX_KUSTOMIZATION (or
FLUX_HELMRELEASE): the Kustomization (HelmRelease) is suspended
first, so Flux does not re-apply the bad commit; resume it yourself (`flux
resume kustomization NAME`) once git holds the fix.

Settings (environment; not ROLLBACKD_*, which rollbackd reads as its own
configuration): K8S_DEPLOYMENT (required), K8S_NAMESPACE (default: the
kubeconfig's), FLUX_NAMESPACE, KUBECTL, FLUX (the binaries, default
`kubectl` and `flux`). rollbackd passes
ROLLBACKD_LIMIT, ROLLBACKD_DEPLOYMENT_ID. Standard library only.
"""

import json
import os
import subprocess
import sys

REVISION = "deployment.kubernetes.io/revision"


def run(argv):
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def kubectl(*args):
    argv = [os.environ.get("KUBECTL", "kubectl")]
    namespace = os.environ.get("K8S_NAMESPACE")
    if namespace:
        argv += ["--namespace", namespace]
    return run(argv + list(args))


def name():
    deployment = os.environ.get("K8S_DEPLOYMENT", "")
    if not deployment:
        sys.exit("set K8S_DEPLOYMENT to the Deployment's name")
    return deployment


def deployments():
    deployment = json.loads(kubectl("get", "deployment", name(), "-o", "json"))
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    sets = json.loads(kubectl("get", "replicasets", "-l", labels, "-o", "json"))["items"]
    uid = deployment["metadata"]["uid"]
    current = deployment["metadata"].get("annotations", {}).get(REVISION)
    status = deployment.get("status", {})
    wanted = deployment["spec"].get("replicas", 1)
    complete = (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
    )
    out = []
    for rs in sets:
        owners = rs["metadata"].get("ownerReferences", [])
        if not any(o.get("uid") == uid for o in owners):
            continue
        revision = rs["metadata"].get("annotations", {}).get(REVISION)
        if revision is None:
            continue
        template = rs["spec"]["template"]
        image = template["spec"]["containers"][0]["image"]
        version = template["metadata"].get("labels", {}).get("app.kubernetes.io/version")
        live = revision == current
        out.append({
            "id": revision,
            "status": ("SUCCESS" if complete else "DEPLOYING") if live else "REMOVED",
            "created_at": rs["metadata"]["creationTimestamp"],
            "git_sha": version or image.rsplit(":", 1)[-1],
        })
    out.sort(key=lambda d: int(d["id"]), reverse=True)
    return out


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "list":
        limit = int(os.environ.get("ROLLBACKD_LIMIT", "50"))
        print(json.dumps(deployments()[:limit]))
    elif command == "status":
        wanted = os.environ["ROLLBACKD_DEPLOYMENT_ID"]
        found = [d for d in deployments() if d["id"] == wanted]
        print(json.dumps(found[0]) if found else "null")
    elif command == "rollback":
        flux = os.environ.get("FLUX", "flux")
        for kind in ("KUSTOMIZATION", "HELMRELEASE"):
            suspended = os.environ.get(f"FLUX_{kind}")
            if suspended:
                argv = [flux, "suspend", kind.lower(), suspended]
                namespace = os.environ.get("FLUX_NAMESPACE")
                if namespace:
                    argv += ["--namespace", namespace]
                run(argv)
        kubectl("rollout", "undo", f"deployment/{name()}",
                f"--to-revision={os.environ['ROLLBACKD_DEPLOYMENT_ID']}")
    else:
        sys.exit("usage: deployments.py list|status|rollback")


if __name__ == "__main__":
    main()
