#!/bin/sh
# Creates (or, run again, updates) the JetStream objects of wxcancel with the
# nats CLI, from the declarative configurations beside this script. Run it as
# the WXPAY account's administrator, then start `wxcancel serve` with
# WXCANCEL_PROVISION=false:
#
#   nats context save wxpay-admin --server nats://nats:4222 --nkey admin.nk
#   NATS_CONTEXT=wxpay-admin sh deploy/nats/provision.sh
#
# The configurations equal what `wxcancel serve` provisions itself with
# WXCANCEL_SUBJECT_PREFIX=wxpay and WXCANCEL_REPLICAS=3 (deploy_test.go
# proves it). KV buckets are streams named KV_<bucket>; they are created as
# such so that every setting is declared here.
set -eu
dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)

apply_stream() {
  name=$1
  if nats stream info "$name" >/dev/null 2>&1; then
    nats stream edit "$name" --config "$dir/streams/$name.json" --force
  else
    nats stream add "$name" --config "$dir/streams/$name.json"
  fi
}

for s in WXPAY_COMMANDS WXPAY_EVENTS WXPAY_DLQ KV_WXPAY_OUTCOMES KV_WXPAY_STATUS KV_WXPAY_TRACKING KV_WXPAY_TRACK_LEASE; do
  apply_stream "$s"
done

if nats consumer info WXPAY_COMMANDS wxcancel >/dev/null 2>&1; then
  nats consumer edit WXPAY_COMMANDS wxcancel --config "$dir/consumers/WXPAY_COMMANDS.wxcancel.json" --force
else
  nats consumer add WXPAY_COMMANDS wxcancel --config "$dir/consumers/WXPAY_COMMANDS.wxcancel.json"
fi
