#!/usr/bin/env bash
# Waits for a PipelineGate's verdict on its current spec and fails fast when the gate is blocked.
#
#   examples/wait-for-gate.sh NAMESPACE GATE [TIMEOUT_SECONDS]     (default timeout 1800)
#
# Exit 0: open (Ready=True). Exit 1: blocked (Stalled=True: the newest run failed, waiting timed out or
# the PAT was rejected). Exit 2: no verdict within the timeout. Exit 3: kubectl failed.
#
# A verdict counts only when status.observedGeneration equals metadata.generation: a gate lockstep has not
# evaluated yet (the CRD's default status has no observedGeneration) or one whose status describes an older
# spec keeps the script waiting (docs/fail-closed.md). `kubectl wait --for=jsonpath=...` cannot express
# that, which is why this is a loop.
set -uo pipefail
ns="${1:?namespace}"; gate="${2:?gate name}"; timeout="${3:-1800}"
deadline=$((SECONDS + timeout))
jsonpath='{.metadata.generation}|{.status.observedGeneration}|{.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Stalled")].status}|{.status.conditions[?(@.type=="Ready")].message}'
while :; do
  if ! line="$(kubectl -n "$ns" get "pipelinegate/$gate" -o "jsonpath=$jsonpath")"; then
    exit 3
  fi
  IFS='|' read -r generation observed ready stalled message <<<"$line"
  if [ -n "$observed" ] && [ "$observed" = "$generation" ]; then
    if [ "$ready" = "True" ]; then echo "open: $message"; exit 0; fi
    if [ "$stalled" = "True" ]; then echo "blocked: $message" >&2; exit 1; fi
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "timed out after ${timeout}s: ${message:-no verdict for generation $generation yet}" >&2
    exit 2
  fi
  sleep "${POLL_SECONDS:-5}"
done
