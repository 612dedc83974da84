#!/usr/bin/env bash
# Spark GPU discovery script (spark.{executor,worker,driver}.resource.gpu.discoveryScript): prints the
# GPUs nvidia-smi sees as {"name":"gpu","addresses":["0","1"]}; an empty list when there are none.
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' | grep -E '^[0-9]+$' \
  | sed 's/.*/"&"/' | paste -sd, -)
echo "{\"name\":\"gpu\",\"addresses\":[${addresses}]}"
