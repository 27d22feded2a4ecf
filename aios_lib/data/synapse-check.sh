#!/bin/bash
# Synapse OS guest check (phase 06): an extra check of the base system's guest self-check
# (/usr/local/lib/aios/checks.d/synapse.sh), which runs only in QEMU verification boots, after the
# boot has finished, with stdout on ttyS0. One `AIOS-CHECK syn_<key>=value` line per fact.
# The phase writes the settings below (@@...@@) when it installs the script.
set -u
UNIT=@@UNIT@@
PORT=@@PORT@@
WINDOW=@@WINDOW@@
DATA_DIR=@@DATA_DIR@@

emit() { printf '\nAIOS-CHECK syn_%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n\r' '  ' | sed 's/  *$//')"; }

emit begin "$(date -u +%FT%TZ) boot_id=$(cat /proc/sys/kernel/random/boot_id)"

# ---- the inference service --------------------------------------------------------------------
http() { # http METHOD PATH [BODY]: raw HTTP/1.0 over bash's /dev/tcp (no curl in the image)
  local body=${3:-}
  exec 3<>/dev/tcp/127.0.0.1/$PORT || return 1
  printf '%s %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "${#body}" "$body" >&3
  timeout 600 cat <&3
  exec 3<&-
}
emit cpu_isa "$(grep -m1 -o -w -E 'avx2|fma|f16c|bmi2|avx512f' /proc/cpuinfo | sort -u | paste -sd, -)"
health=""
for i in $(seq 1 150); do
  health=$(http GET /health 2>/dev/null | head -1)
  case "$health" in *" 200"*) break ;; esac
  sleep 2
done
emit health_wait_s "$(( (i - 1) * 2 ))"
emit health "$health"
case "$health" in *" 200"*) ;; *)
  emit service_show "$(systemctl show -p NRestarts -p ExecMainCode -p ExecMainStatus -p Result "$UNIT" | paste -sd' ' -)"
  emit service_journal "$(journalctl -b -u "$UNIT" -n 25 --no-pager -o cat 2>&1 | tail -25 | paste -sd'|' -)"
  ;;
esac
emit active "$(systemctl is-active "$UNIT")"
PID=$(systemctl show -p MainPID --value "$UNIT")
emit main_pid "$PID"
if [ -n "$PID" ] && [ "$PID" != 0 ]; then
  emit exe "$(readlink /proc/$PID/exe)"
  emit argv "$(tr '\0' ' ' </proc/$PID/cmdline)"
  emit user "$(ps -o user= -p "$PID")"
  emit sched_policy "$(awk -F: '/^policy/ {gsub(/ /,"",$2); print $2}' /proc/$PID/sched)"
  emit chrt "$(chrt -p "$PID" | head -1)"
  emit nice "$(ps -o ni= -p "$PID" | tr -d ' ')"
  emit oom_score_adj "$(cat /proc/$PID/oom_score_adj)"
  emit cpus_allowed "$(awk '/^Cpus_allowed_list/ {print $2}' /proc/$PID/status)"
  emit no_new_privs "$(awk '/^NoNewPrivs/ {print $2}' /proc/$PID/status)"
  emit seccomp "$(awk '/^Seccomp:/ {print $2}' /proc/$PID/status)"
  emit cap_eff "$(awk '/^CapEff/ {print $2}' /proc/$PID/status)"
  cg=$(awk -F: '$1 == "0" {print $3}' /proc/$PID/cgroup)
  emit cgroup "$cg"
  emit memory_high "$(cat /sys/fs/cgroup$cg/memory.high)"
  emit memory_current "$(cat /sys/fs/cgroup$cg/memory.current)"
  emit memlock "$(awk '/^Max locked memory/ {print $4}' /proc/$PID/limits)"
fi

# ---- idle CPU over a fixed window, with the service loaded but not asked anything ---------------
emit running_services "$(systemctl list-units --type=service --state=running --no-legend --plain | awk '{print $1}' | paste -sd, -)"
emit active_timers "$(systemctl list-units --type=timer --state=active --no-legend --plain | awk '{print $1}' | paste -sd, -)"
# per-process CPU ticks (utime + stime of /proc/PID/stat), to say who uses the idle CPU
snap() {
  for f in /proc/[0-9]*/stat; do read -r line <"$f" 2>/dev/null && echo "$line"; done |
    awk '{ o = index($0, "("); c = match($0, /\) [A-Za-z] /); name = substr($0, o + 1, c - o - 1);
           split(substr($0, c + 2), a, " "); gsub(/ /, "_", name); print $1, name, a[12] + a[13] }'
}
p1=$(snap)
s1=$(head -1 /proc/stat)
sleep "$WINDOW"
s2=$(head -1 /proc/stat)
p2=$(snap)
emit idle_top "$(printf '%s\n--\n%s\n' "$p1" "$p2" | awk '$1 == "--" { second = 1; next }
  !second { t[$1] = $3; next } ($1 in t) && $3 > t[$1] { print $3 - t[$1], $2 "[" $1 "]" }' |
  sort -rn | head -12 | awk '{ print $2 "=" $1 }' | paste -sd, -)"
emit stat_before "$s1"
emit stat_after "$s2"
emit idle_window_s "$WINDOW"
emit clk_tck "$(getconf CLK_TCK)"

# ---- a completion from the bundled model on loopback -----------------------------------------------
t0=$(date +%s.%N)
resp=$(http POST /completion '{"prompt":"The capital of France is","n_predict":8,"temperature":0,"cache_prompt":false}')
t1=$(date +%s.%N)
emit completion_status "$(printf '%s' "$resp" | head -1)"
emit completion_content "$(printf '%s' "$resp" | grep -o '"content":"[^"]*"' | head -1)"
emit completion_tokens "$(printf '%s' "$resp" | grep -o '"predicted_n":[0-9]*' | head -1)"
emit completion_s "$(echo "$t1 - $t0" | awk '{print $1 - $3}')"

# ---- hardening --------------------------------------------------------------------------------------
emit ssh_enabled "$(systemctl is-enabled ssh.service 2>&1 | head -1)"
emit ssh_installed "$( [ -e /usr/sbin/sshd ] && echo yes || echo no)"
emit listening "$(ss -Hltn | awk '{print $4}' | paste -sd, -)"
emit masked "$(systemctl list-unit-files --state=masked --no-legend --plain 2>/dev/null | awk '{print $1}' | paste -sd, -)"
emit journald "$(systemd-analyze cat-config systemd/journald.conf 2>/dev/null | grep -E '^(Storage|SystemMaxUse|RuntimeMaxUse)=' | paste -sd' ' -)"
emit journal_persistent "$( [ -d /var/log/journal ] && ls -A /var/log/journal | head -1)"

# ---- read-only root and the persistent data partition ----------------------------------------------
emit root_fstype "$(findmnt -no FSTYPE /)"
emit root_source "$(findmnt -no SOURCE /)"
emit root_options "$(findmnt -no OPTIONS /)"
emit sysroot_lower "$(grep -E ' /run/systemd/(overlay-sysroot|volatile-root)' /proc/mounts | awk '{print $2":"$3":"$4}' | paste -sd' ' -)"
emit data_fstype "$(findmnt -no FSTYPE "$DATA_DIR")"
emit data_source "$(findmnt -no SOURCE "$DATA_DIR")"
emit root_marker_before "$( [ -e /synapse-root-marker ] && cat /synapse-root-marker || echo absent)"
emit data_marker_before "$( [ -e "$DATA_DIR/synapse-data-marker" ] && cat "$DATA_DIR/synapse-data-marker" || echo absent)"
boot=$(cat /proc/sys/kernel/random/boot_id)
echo "$boot" >/synapse-root-marker && emit root_marker_written "$boot"
echo "$boot" >"$DATA_DIR/synapse-data-marker" && emit data_marker_written "$boot"
sync
emit end ok
