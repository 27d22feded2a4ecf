# A fleet test host: started by aios_lib.fleet.testbed through the runner, one process per host.
#   sh host-boot.sh NAME NETNS CGROUP HOSTDIR
# Stage 1 (this machine's namespaces): join the host's cpuset, then enter its network namespace
# with a mount and UTS namespace of its own. Stage 2 (--inside): the host's root is an overlay over
# this machine's / (writes go to a tmpfs upper layer that disappears with the host), with its own
# /proc, /run, /tmp, hostname, SSH host key and authorized key; then sshd (the same process) runs
# chrooted there, listening only on the host's address. Stopping it removes every mount.
set -eu
if [ "${1:-}" != "--inside" ]; then
  echo $$ > "$3/tasks"
  exec ip netns exec "$2" unshare --mount --uts --propagation private -- sh "$0" --inside "$1" "$4"
fi
name=$2; hostdir=$3
hostname "$name"
mount --make-rprivate /
# the upper layer's tmpfs on a folder of the host's own (never over a shared path such as /mnt)
fs="$hostdir/fs"
mkdir -p "$fs"
mount -t tmpfs -o size=2g,mode=0755 "synapse-fleet-$name" "$fs"
mkdir -p "$fs/upper" "$fs/work" "$fs/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$fs/upper,workdir=$fs/work" "$fs/root"
r="$fs/root"
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
mount -t tmpfs -o mode=0755 run "$r/run"
mount -t tmpfs -o mode=1777 tmp "$r/tmp"
mkdir -p "$r/run/sshd" "$r/root/.ssh"
chmod 700 "$r/root/.ssh"
cp "$hostdir/authorized_keys" "$r/root/.ssh/authorized_keys"
rm -f "$r"/etc/ssh/ssh_host_*
cp "$hostdir/ssh_host_ed25519_key" "$hostdir/ssh_host_ed25519_key.pub" "$r/etc/ssh/"
chmod 600 "$r/etc/ssh/ssh_host_ed25519_key"
cp "$hostdir/sshd_config" "$r/etc/ssh/sshd_config"
echo "$name" > "$r/etc/hostname"
exec chroot "$r" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
