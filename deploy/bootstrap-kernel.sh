#!/bin/sh
# The kernel image's command. Enterprise Gateway's launch_kubernetes.py (a pod) or launch_docker.py
# (a container) start this image with the launch parameters in the environment, as they do for their
# own images' bootstrap-kernel.sh; llmspell then speaks EG's launch contract itself (no Python here).
set -eu

KERNEL_ID=${KERNEL_ID:?KERNEL_ID is not set: this image is started by Enterprise Gateway}
RESPONSE_ADDRESS=${RESPONSE_ADDRESS:-${EG_RESPONSE_ADDRESS:?RESPONSE_ADDRESS is not set}}
PUBLIC_KEY=${PUBLIC_KEY:-${EG_PUBLIC_KEY:?PUBLIC_KEY is not set}}
PORT_RANGE=${PORT_RANGE:-${EG_PORT_RANGE:-0..0}}
# KERNEL_LANGUAGE and KERNEL_SPARK_CONTEXT_INIT_MODE, which EG's bootstrap reads, mean nothing here.

exec llmspell kernel start \
    --RemoteProcessProxy.kernel-id "$KERNEL_ID" \
    --RemoteProcessProxy.response-address "$RESPONSE_ADDRESS" \
    --RemoteProcessProxy.public-key "$PUBLIC_KEY" \
    --RemoteProcessProxy.port-range "$PORT_RANGE" \
    ${LLMSPELL_KERNEL_ARGS:-}
