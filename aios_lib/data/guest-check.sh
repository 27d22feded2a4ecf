#!/bin/sh
# Synapse guest self-check. Installed by the base-system phase as /usr/local/libexec/aios-guest-check
# and started by aios-guest-check.service, which runs only when QEMU passes the SMBIOS OEM string
# "aios-guest-check" (so a real machine never runs it). It waits for the boot to finish, prints
# what is in effect as "AIOS-CHECK key=value" lines on the serial console, runs the extra checks
# in /usr/local/lib/aios/checks.d/*.sh (later phases add theirs), and powers the machine off.
# The report goes to ttyS1, a serial port QEMU writes straight to a file, never to the console
# (ttyS0): a getty starting there calls vhangup(), after which every write of ours would be lost.
systemctl is-system-running --wait >/dev/null 2>&1
sleep 2
port=ttyS1; stty -F /dev/ttyS1 -echo raw 2>/dev/null || port=ttyS0
echo "aios-guest-check: started, report on $port" >/dev/kmsg 2>/dev/null
exec >/dev/$port 2>&1
say() { printf '\nAIOS-CHECK %s=%s\n' "$1" "$2"; }
one() { tr '\n' ' ' | sed 's/  */ /g; s/ $//'; }
echo
echo "AIOS-CHECK-BEGIN"
say kernel "$(uname -r)"
say efi "$( [ -d /sys/firmware/efi ] && echo yes || echo no)"
li=/sys/firmware/efi/efivars/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
say loader "$( [ -r $li ] && cat $li | tail -c +5 | tr -d '\000' || echo none)"
le=/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
say loader_entry "$( [ -r $le ] && cat $le | tail -c +5 | tr -d '\000' || echo none)"
say cmdline "$(cat /proc/cmdline)"
say thp "$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
say thp_defrag "$(cat /sys/kernel/mm/transparent_hugepage/defrag 2>/dev/null)"
say zram_algorithm "$(cat /sys/block/zram0/comp_algorithm 2>/dev/null || echo none)"
say zram_disksize "$(cat /sys/block/zram0/disksize 2>/dev/null || echo 0)"
say swaps "$(tail -n +2 /proc/swaps | awk '{print $1":"$5}' | one)"
say memtotal_kb "$(awk '/^MemTotal/{print $2}' /proc/meminfo)"
say journal_run_files "$(find /run/log/journal -name '*.journal' 2>/dev/null | wc -l)"
say journal_var_files "$(find /var/log/journal -name '*.journal' 2>/dev/null | wc -l)"
say journal_runtime_max "$(journalctl -b -o cat -t systemd-journald 2>/dev/null | sed -n 's/.*Runtime Journal.* max \([0-9.]*[KMGT]\).*/\1/p' | tail -n1)"
say masked "$(systemctl list-unit-files --state=masked --no-legend --plain 2>/dev/null | awk '{print $1}' | sort | one)"
say root_mount "$(findmnt -n -o SOURCE,FSTYPE,OPTIONS / | one)"
say default_target "$(systemctl get-default)"
say hostname "$(cat /etc/hostname)"
say system_state "$(systemctl is-system-running)"
say failed_units "$(systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}' | one)"
for f in /etc/sysctl.d/90-synapse.conf; do
  [ -r "$f" ] || continue
  for k in $(sed -n 's/^\([a-z][a-zA-Z0-9_.-]*\) *=.*/\1/p' "$f"); do say "sysctl.$k" "$(sysctl -n "$k" 2>/dev/null)"; done
done
# the loaded modules, the list a custom kernel's localmodconfig needs (phase 3: kernel.lsmod_file)
say modules "$(awk '{print $1}' /proc/modules | sort | one)"
say boot_time "$(systemd-analyze time 2>/dev/null | head -n1 | sed 's/^Startup finished in //')"
for f in /usr/local/lib/aios/checks.d/*.sh; do
  [ -x "$f" ] && "$f"
done
echo "AIOS-CHECK-END"
sync
systemctl poweroff --no-block
