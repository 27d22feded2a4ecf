# Run a command inside a fleet test host, as a process of that host: its cpuset, network, mount and
# UTS namespaces, and its root (the overlay sshd runs in).
#   sh enter-host.sh CGROUP HOST_PID command [args...]
set -eu
cg=$1; pid=$2; shift 2
echo $$ > "$cg/tasks"
exec nsenter --target "$pid" --net --mount --uts --root --wd -- "$@"
