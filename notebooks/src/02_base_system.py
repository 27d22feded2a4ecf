# %% [markdown]
# # Phase 2: build the base system
#
# The blueprint's Phase 2 boots an Arch ISO, partitions the NVMe disk (ESP + XFS root), runs
# `pacstrap` and configures the new root in a chroot. Sections 1.1-1.5 add what that root must
# hold: systemd-boot with no menu, systemd with non-essential units masked, an XFS root with tuned
# mount options, transparent huge pages in `madvise` mode and zram swap; section 5 adds the kernel
# command line and a journal kept in RAM.
#
# This notebook does those steps on the **target** named in the parameter file:
#
# * `target.kind: disk`: a real disk, erased. Only when `target.confirm` repeats the disk's
#   `/dev/disk/by-id/...` path exactly, and never a disk that is mounted or holds the running system.
# * `target.kind: image`: a disk image file on a loop device (what the tests use; the result can be
#   written to a disk later). Same steps.
#
# Every command goes through the run's journal (`commands.jsonl`). In plan mode (the default when
# you open this by hand) the commands are listed and nothing is changed. At the end, the result is
# booted in QEMU and a check inside the guest reports what is really in effect.

# %% tags=["parameters"]
# A template: `make lab` (`aios lab`) opens a copy whose outputs become a run's record.
# Opened here, the record is scratch (outputs/_scratch/) and what you save changes the template.
params_file = "parameters/default.yaml"
run_dir = None
# plan = True lists every command and changes nothing (read-only probes run).
# To run for real: plan = False, then Run All. That partitions, formats and installs the
# target of the parameter file: only when its target.confirm repeats the target, and after
# you confirm in the prompt under the run header.
plan = True

# %%
import aios_lib
from aios_lib.system import image

run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="02")
run

# %% [markdown]
# ## The target
#
# The default parameter file touches no disk (`target.kind: none`); this phase then has nothing to
# do and says so. Use `parameters/image-debian.yaml` for an image, or a copy of
# `parameters/example-i7-arch.yaml` for the blueprint's machine.

# %%
if run.params.target.kind == "none":
    print("target.kind is 'none': phase 02 writes nothing. Run it with parameters/image-debian.yaml "
          "(an image) or a disk target; planning the blueprint's machine instead.")
    run = aios_lib.open_run("parameters/example-i7-arch.yaml", run_dir=run.dir, plan=True, phase="02")
base = image.start(run)
base

# %% [markdown]
# ## 1. Check the parameters before anything runs
#
# Two lines of the blueprint do not work as written, and are caught when the parameter file loads
# (so `aios check` refuses them too):
#
# * Section 1.4's mount options `noatime, nodiratime, discard=async, commit=60` on XFS: `commit=`
#   is an ext4/btrfs journal option and `discard=async` is btrfs-only, so XFS refuses to mount with
#   them. `nodiratime` is implied by `noatime` (dropped with a warning). Continuous `discard` costs
#   latency on many SSDs; `fstrim.timer` is the usual alternative.
# * Section 5.2's command line `auditing=0 logic=no`: neither is a kernel parameter (the kernel
#   hands unknown words to init, which ignores them). `audit=0` is the real switch. Every name is
#   checked against the kernel's documented parameters, and `mitigations=off` is accepted only
#   when `machine.trusted_offline` is true: the record carries the warning.
#
# What is left to check here is the target itself and whether it must be built at all.

# %%
validation = image.validate(run, base)
validation

# %% [markdown]
# ## 2. Prepare: safety and reruns
#
# A disk that is mounted, used as swap or holds the running system is refused. Leftovers of a run
# that was killed (a mount, a loop device) are released. An image built before with identical
# inputs is kept ("up to date"); a verified image with identical inputs in
# `~/.cache/synapse/base-image` is copied instead of rebuilt; anything else is rebuilt from scratch.

# %%
image.prepare(run, base)

# %% [markdown]
# ## 3. Partition (blueprint step 2)
#
# GPT with an EFI system partition (FAT32, 512 MiB) and the root partition. This is the first
# destructive command: without the confirmation it is refused and the target is left untouched.

# %%
image.partition(run, base)

# %% [markdown]
# ## 4. Format (step 3)
#
# FAT32 for the ESP and XFS for the root. On an image, the partitions of the loop device need
# `partx -a` on machines whose kernel creates no partition nodes (no udev, or no GPT support).

# %%
image.format(run, base)

# %% [markdown]
# ## 5. Mount
#
# The root is mounted with its final options. The blueprint mounts the ESP at `/mnt/boot`; here it
# is `/efi`, where `kernel-install` and systemd-boot expect it, with the kernel and initrd written
# by `kernel-install` (so `/boot` stays on XFS and dpkg can `chmod` its files). When this
# machine's kernel has no vfat driver, the ESP is staged in a tmpfs and copied onto the FAT
# partition with mtools at the end, as image builders do.

# %%
image.mount(run, base)

# %% [markdown]
# ## 6. Bootstrap the minimal base (step 4)
#
# Arch: `pacstrap` with the blueprint's package list, plus a kernel (until phase 3 builds one),
# `xfsprogs`, `dracut` and `zram-generator`. Debian: `debootstrap --variant=minbase` with systemd,
# systemd-boot and zram-generator; downloads are cached in `~/.cache/synapse/debootstrap`.
#
# Both use **dracut** for the initrd: phase 6's read-only root uses `systemd.volatile=overlay`, which
# needs a systemd-based initrd. Debian's default initramfs-tools silently ignores it.

# %%
image.bootstrap(run, base)

# %% [markdown]
# ## 7. Configure the root (step 5, sections 1.2, 1.5, 5.1, 5.3)
#
# Each setting is written into the target root and read back from it: fstab by UUID (`genfstab
# -U`, or `blkid` where there is no udev database), hostname, a root autologin on the serial
# console for the first boot, `multi-user.target`, the blueprint's units masked (only those that
# exist: minimal systems have no cups or bluetooth, and the record lists what was absent), the
# journal in RAM capped at 50M, zram swap the size of RAM with zstd (`zram-size = ram` is the
# current spelling of `zram-fraction = 1.0`), THP `madvise` and sysctl values for zram.

# %%
configured = image.configure(run, base)
configured

# %%
configured.data

# %% [markdown]
# ## 8. Boot loader (section 1.1, 5.2)
#
# `bootctl install` without EFI variables (a chroot has none; the firmware boots the removable
# fallback path `EFI/BOOT/BOOTX64.EFI`), `loader.conf` with `timeout 0`, and a boot entry written
# by `kernel-install` from `/etc/kernel/cmdline`: the kernel's package hooks call the same
# `kernel-install` on upgrades, so the command line survives them.

# %%
boot_loader = image.install_bootloader(run, base)
boot_loader

# %%
boot_loader.data

# %% [markdown]
# ## 9. Finish
#
# Package caches are cleaned and unused blocks trimmed (a smaller image), the staged ESP is copied
# onto the FAT partition, and everything is unmounted and detached.

# %%
image.finish(run, base)

# %% [markdown]
# ## 10. Prove it: boot and compare
#
# The result boots in QEMU with UEFI firmware (OVMF), with KVM when it works and emulation
# otherwise; the disk is attached as a snapshot, so the boot changes nothing. A self-check inside
# the guest (it runs only when QEMU passes its marker) waits for the boot to finish, prints what is
# in effect on the serial console and powers off. Any row that does not match fails the phase.

# %%
boot = image.verify(run, base)
boot

# %% [markdown]
# ## The record
#
# Every command this phase ran (or, in plan mode, would run), in order.

# %%
run.plan_summary()
