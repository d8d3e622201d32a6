#!/bin/sh
# The demo's deploy platform, reached through rollbackd's `command` provider:
# the demo service keeps a list of its deploys. rollbackd passes values as
# environment variables (ROLLBACKD_DEPLOYMENT_ID), never on a command line.
set -eu
case "${1:-}" in
  list)     curl -fsS "$DEMO_URL/deployments" ;;
  status)   curl -fsS "$DEMO_URL/deployments/$ROLLBACKD_DEPLOYMENT_ID" ;;
  rollback) curl -fsS -X POST "$DEMO_URL/deployments/$ROLLBACKD_DEPLOYMENT_ID/rollback" ;;
  cancel)   curl -fsS -X POST "$DEMO_URL/deployments/$ROLLBACKD_DEPLOYMENT_ID/cancel" ;;
  *) echo "usage: deploys.sh list|status|rollback|cancel" >&2; exit 2 ;;
esac
