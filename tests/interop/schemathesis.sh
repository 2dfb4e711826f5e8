#!/usr/bin/env bash
# Property-based checks of both OpenAPI documents against a running demo gateway: no answer is a
# 5xx, every status and content type is documented, every JSON answer matches its schema.
# Runs the data API as an anonymous caller, as the demo user and as an owner, and the admin API
# with the operator token. Usage: tests/interop/schemathesis.sh path/to/kaifang
set -euo pipefail
kaifang="$1"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$kaifang" serve --data-dir "$work/data" --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0 \
    >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 100); do
    grep -q "http listening" "$work/out" 2>/dev/null && break
    sleep 0.1
done
http="http://$(sed -n 's/^kaifang: http listening on //p' "$work/out")"
admin="http://$(sed -n 's/^kaifang: admin listening on //p' "$work/out")"
token="$(cat "$work/data/admin.token")"
user="$(cat "$work/data/demo-user.key")"

# An owner of the conditional dataset, to reach the owners' side of the workflows.
curl -sf -H "Authorization: Bearer $token" -d '{"id": "market", "name": "Market", "role": "owner",
    "department": "Municipal Market Supervision Administration"}' "$admin/admin/principals" >/dev/null
owner="$(curl -sf -H "Authorization: Bearer $token" -d '{"principal": "market"}' "$admin/admin/keys" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')"

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
run() {
    echo "== schemathesis: $1"
    shift
    schemathesis run "$@" --checks "$checks" --max-examples 25 --seed 7 --workers 1 --no-color \
        --generation-database none --request-timeout 30
}
run "data API, anonymous" "$http/openapi.json"
run "data API, the demo user" "$http/openapi.json" -H "Authorization: Bearer $user"
run "data API, an owner" "$http/openapi.json" -H "Authorization: Bearer $owner"
run "admin API, the operators" "$admin/admin/openapi.json" -H "Authorization: Bearer $token"
