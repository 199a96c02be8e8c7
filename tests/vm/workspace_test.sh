#!/usr/bin/env bash
# vm: a `base` workspace through the control API on a real QEMU (TCG here; KVM where it works):
# running, the app's forwarded port answers, a file written in the guest survives stop/start, metrics
# and logs (and the SSE stream) show the app, stop is a graceful powerdown, a guest reboot boots it
# again and a guest poweroff stops it, a killed QEMU makes the
# workspace `failed` and retry brings it back, restarting control keeps the VM running, delete removes
# every file. usage: workspace_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
. "$src/tests/integration/lib.sh"
rb_db_create
"$src/tools/mkimage" --out "$src/var/images" >"$RB_TMP/mkimage.log" 2>&1 ||
    { cat "$RB_TMP/mkimage.log"; echo "0 passed, 1 failed"; exit 1; }

ctl_port=$(rb_free_port)
export RIGBOX_DATABASE_URL=$RB_DB_URL RIGBOX_CONTROL_LISTEN=127.0.0.1:$ctl_port
cfg=$RB_TMP/rigbox.yaml
cat >"$cfg" <<YAML
models: $src/config/models.yaml
templates: $src/config/templates
vmm:
  accel: ${RB_TEST_ACCEL:-tcg}
  image_dir: $src/var/images
  state_dir: $RB_TMP/vms
  stop_timeout_ms: 10000
YAML
control=$build/control/rigbox-control
api=http://127.0.0.1:$ctl_port/api/v1
start_control() {
    rb_spawn control "$control" --config "$cfg"
    ctl_pid=$RB_LAST_PID
    rb_wait_http "$api/healthz"
}
check "control starts" start_control
key=$("$control" --config "$cfg" admin create-key --role admin 2>/dev/null)
H=(-H "Authorization: Bearer $key")
user=$(curl -fsS "${H[@]}" -X POST "$api/users" -d '{"email":"vm@example.com","plan":"pro"}' | jq -r .user.id)
ws=$(curl -fsS "${H[@]}" -X POST "$api/workspaces" -d "{\"name\":\"vm\",\"template_id\":\"base\",\"user_id\":\"$user\"}" | jq -r .vm.id)
dir=$RB_TMP/vms/$ws

status() { curl -fsS "${H[@]}" "$api/workspaces/$ws" | jq -r .vm.status; }
wait_status() { # wait_status WANT [tries of 0.5 s]
    local s
    for ((i = 0; i < ${2:-120}; i++)); do
        s=$(status)
        [[ $s == "$1" ]] && return 0
        sleep 0.5
    done
    echo "  status is $s, wanted $1" >&2
    return 1
}
console() { # console "command": runs it on the guest's serial console, prints the output
    python3 - "$dir/console.sock" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(0.5)
s.sendall(b"\n" + sys.argv[2].encode() + b"\n")
out, end = b"", time.time() + 3
while time.time() < end:
    try:
        out += s.recv(4096)
    except socket.timeout:
        pass
print(out.decode(errors="replace"))
PY
}
no_qemu() { ! pgrep -f "${dir}/qm[p].sock" >/dev/null; } # [p]: never matches pgrep's own caller
app_port() { curl -fsS "${H[@]}" "$api/workspaces/$ws" | jq -r '.vm.apps[] | select(.name=="www") | .host_port'; }
app_answers() {
    local p
    p=$(app_port)
    for ((i = 0; i < 40; i++)); do
        curl -fsS -m 2 "http://127.0.0.1:$p/" 2>/dev/null | grep -q "Hello from a Rigbox workspace" && return 0
        sleep 0.5
    done
    return 1
}

code=$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" -X POST "$api/workspaces/$ws/stop")
check "stopping a provisioned workspace is 409" test "$code" = 409
api_tok=$(curl -fsS "${H[@]}" -X POST "$api/workspaces/$ws/token" | jq -r .token)
curl -fsS -o /dev/null "${H[@]}" -X POST "$api/workspaces/$ws/env" -d '{"env_vars":{"MULTI":"line1\nline2","AFTER":"x"}}'
curl -fsS -o /dev/null "${H[@]}" -X PUT "$api/workspaces/$ws/ai-config" -d '{"mode":"managed","model":"gpt-4o-mini"}'
live() { rb_sql "SELECT count(*) FROM workspace_tokens WHERE workspace_id = '$ws' AND revoked_at IS NULL AND $1"; }
check "start answers at once with starting" \
    test "$(curl -fsS "${H[@]}" -X POST "$api/workspaces/$ws/start" | jq -r .vm.status)" = starting
check "the workspace reaches running" wait_status running
check "the boot gave the guest a token of its own and left the minted one live" \
    test "$(live "kind = 'boot'")/$(live "token_hash = sha256('$api_tok'::bytea)")" = 1/1
check "the forwarded app port answers" app_answers
check "its host port is in vmm.hostfwd_port_min..max (20000..29999; was any ephemeral port)" \
    bash -c "p=\$(curl -fsS ${H[*]@Q} $api/workspaces/$ws | jq -r '.vm.apps[0].host_port'); [ \"\$p\" -ge 20000 ] && [ \"\$p\" -le 29999 ]"
guest_env=$(console 'echo "env: [$AFTER] [$RIGBOX_AI_MODE/$RIGBOX_AI_MODEL] $(printf %s "$MULTI" | wc -l)"' | tr -d '\r' | grep '^env: ')
check "a login shell has every variable, a two-line one too, and the AI config's model ($guest_env)" \
    test "$guest_env" = "env: [x] [managed/gpt-4o-mini] 1"
check "a file written in the guest" grep -q "^persisted-$ws" <(console "echo persisted-$ws > /root/marker; sync; cat /root/marker")
root_mb=$(console 'df -m / | tail -1' | awk '$2 ~ /^[0-9]+$/ { mb = $2 } END { print mb + 0 }')
check "the guest's filesystem fills its 3072 MB disk, not the image's 1 GB ($root_mb MB)" test "$root_mb" -gt 2800
sleep 2.5
m=$(curl -fsS "${H[@]}" "$api/workspaces/$ws/metrics")
check "metrics are non-zero" jq -e '.ram_used_mb > 0 and .ram_total_mb == 512 and .disk_used_mb > 0 and .cpu_percent >= 0 and .updated_at != null' <<<"$m"
check "metrics series has points" jq -e '.points | length > 0' <(curl -fsS "${H[@]}" "$api/workspaces/$ws/metrics/series?range=1h")
check "logs show the app's output" jq -e '[.lines[] | select(contains("[app:www] www: serving"))] | length > 0' \
    <(curl -fsS "${H[@]}" "$api/workspaces/$ws/logs?lines=500")
check "logs filtered by app" jq -e '(.lines | length > 0) and all(.lines[]; startswith("[app:www]"))' \
    <(curl -fsS "${H[@]}" "$api/workspaces/$ws/logs?app=www")
timeout 3 curl -sN "${H[@]}" "$api/workspaces/$ws/logs/stream" >"$RB_TMP/stream.txt" 2>/dev/null
check "the SSE log stream shows the app's output" grep -q "^data: \[app:www\] www: serving" "$RB_TMP/stream.txt"

curl -fsS -o /dev/null "${H[@]}" -X POST "$api/workspaces/$ws/stop"
check "the workspace stops" wait_status stopped 60
check "stop was a graceful powerdown" grep -q "event=workspace_stopped workspace=$ws how=powerdown" "$RB_TMP/control.log"
check "no QEMU left after stop" no_qemu
check "a stopped workspace shows no host port (the old one may be another VM's next)" test "$(app_port)" = null
check "a stopped VM's token is revoked, the minted one is not" \
    test "$(live "kind = 'boot'")/$(live "token_hash = sha256('$api_tok'::bytea)")" = 0/1
curl -fsS -o /dev/null "${H[@]}" -X POST "$api/workspaces/$ws/start"
check "it starts again" wait_status running
check "the file survived stop and start" grep -q "^persisted-$ws" <(console "cat /root/marker")

# The guest ends itself: a reboot boots the workspace again, a poweroff leaves it stopped (both used
# to make it failed/vm_crashed, since QEMU runs with -no-reboot and exits either way).
old_pid=$(cat "$dir/qemu.pid")
rebooted() {
    for ((i = 0; i < 120; i++)); do
        [[ $(cat "$dir/qemu.pid" 2>/dev/null) != "$old_pid" && $(status) == running ]] && return 0
        sleep 0.5
    done
    return 1
}
console "reboot" >/dev/null
check "a guest reboot boots the workspace again" rebooted
check "the reboot was seen as one" grep -q "event=workspace_rebooting workspace=$ws" "$RB_TMP/control.log"
check "the app answers after the reboot" app_answers
console "poweroff" >/dev/null
check "a guest poweroff leaves the workspace stopped" wait_status stopped 60
check "the poweroff was seen as one" \
    grep -q "event=workspace_stopped workspace=$ws how=guest_poweroff" "$RB_TMP/control.log"
check "no QEMU left after the guest's poweroff" no_qemu
curl -fsS -o /dev/null "${H[@]}" -X POST "$api/workspaces/$ws/start"
check "it starts after its own poweroff" wait_status running
metric() { # metric 'name{labels}': its value on control's /metrics (0 when absent)
    rb_metrics "http://127.0.0.1:$ctl_port/metrics" | awk -v k="$1" '$1 == k { v = $2 } END { print v + 0 }'
}
check "control's metrics count the boots and how the VMs ended" test \
    "$(metric 'rigbox_control_vm_boots_total{result="running"}') $(metric 'rigbox_control_vm_ends_total{how="stop"}') $(metric 'rigbox_control_vm_ends_total{how="guest_reboot"}') $(metric 'rigbox_control_vm_ends_total{how="guest_poweroff"}')" = "4 1 1 1"
check "control's metrics count the API's requests" test \
    "$(metric 'rigbox_control_requests_total{method="POST",route="/workspaces/{}/start",status="200"}')" = 3

qemu_pid=$(cat "$dir/qemu.pid")
kill -TERM "$ctl_pid"
wait "$ctl_pid"
check "the VM outlives a control restart" kill -0 "$qemu_pid"
check "control starts again" start_control
check "control adopted the VM" grep -q "event=vm_adopted workspace=$ws" "$RB_TMP/control.log"
check "still running after the restart" wait_status running 4
check "the app still answers" app_answers

kill -KILL "$qemu_pid"
check "a killed QEMU makes the workspace failed" wait_status failed 20
check "the failure says it crashed and may be retried" \
    jq -e '.failure.code == "vm_crashed" and .failure.retryable == true' <(curl -fsS "${H[@]}" "$api/workspaces/$ws")
curl -fsS -o /dev/null "${H[@]}" -X POST "$api/workspaces/$ws/retry"
check "retry brings it back" wait_status running
check "the app answers after retry" app_answers
check "control's metrics count the crash" test \
    "$(metric 'rigbox_control_vm_ends_total{how="crash"}') $(metric 'rigbox_control_workspace_failures_total{code="vm_crashed"}')" = "1 1"

# A VM that dies while control is down: control finds it gone at start.
kill -TERM "$ctl_pid"
wait "$ctl_pid"
kill -KILL "$(cat "$dir/qemu.pid")"
check "control starts with the VM gone" start_control
check "a VM lost while control was down makes the workspace failed" wait_status failed 10
check "the failure is vm_lost and retryable" \
    jq -e '.failure.code == "vm_lost" and .failure.retryable == true' <(curl -fsS "${H[@]}" "$api/workspaces/$ws")

# A guest that powers off while control is down: control finds its VM gone and reads why.
curl -fsS -o /dev/null "${H[@]}" -X POST "$api/workspaces/$ws/retry"
check "retry after a lost VM brings it back" wait_status running
kill -TERM "$ctl_pid"
wait "$ctl_pid"
console "poweroff" >/dev/null
for ((i = 0; i < 60; i++)); do no_qemu && break; sleep 0.5; done
check "control starts after the guest's poweroff" start_control
check "a guest poweroff while control was down leaves the workspace stopped" wait_status stopped 10

code=$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" -X DELETE "$api/workspaces/$ws")
check "delete is accepted (202)" test "$code" = 202
for ((i = 0; i < 60; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" "$api/workspaces/$ws") == 404 ]] && break
    sleep 0.5
done
check "a deleted workspace is 404" test "$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" "$api/workspaces/$ws")" = 404
check "delete removed every file of the VM" test ! -e "$dir"
check "no QEMU left after delete" no_qemu
rb_finish
