"""Phase 3: the custom kernel: where the source comes from, the starting config, the table,
localmodconfig, the build, the install and the QEMU boot check."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section
from .types import BuildJobs, KernelCmdline, PositiveSize

#: The blueprint's table (section 3.1), as written there; the kernel phase reports what sticks.
#: Two rows are wrong as written (SCHED_EEVDF and SPECULATION_MITIGATIONS do not exist in
#: Debian's 6.1/6.12 trees, and HZ cannot be set directly): the phase says so row by row.
BLUEPRINT_TABLE = {
    "SCHED_EEVDF": "y",
    "PREEMPT_VOLUNTARY": "y",
    "HZ": "300",
    "NO_HZ_FULL": "y",
    "CPU_FREQ_GOV_PERFORMANCE": "y",
    "TRANSPARENT_HUGEPAGE": "y",
    "NUMA": "n",
    "SPECULATION_MITIGATIONS": "n",
}

#: What a tinyconfig kernel needs on top to boot in QEMU, print on the serial console, run a
#: busybox initramfs, expose its config in /proc/config.gz and power the VM off (ACPI + PCI).
#: SMP and CPU_FREQ are here because NO_HZ_FULL and CPU_FREQ_GOV_PERFORMANCE depend on them.
TINY_MINIMUM = ["64BIT", "PRINTK", "TTY", "SERIAL_8250", "SERIAL_8250_CONSOLE", "BLK_DEV_INITRD",
                "BINFMT_ELF", "BINFMT_SCRIPT", "PROC_FS", "SYSFS", "IKCONFIG", "IKCONFIG_PROC", "SMP",
                "CPU_FREQ", "ACPI", "PCI", "DEVTMPFS"]


class KernelBoot(Section):
    """The QEMU (TCG) boot check of a built kernel with a busybox initramfs."""

    enabled: bool = True
    memory: PositiveSize = Field("1G", pattern=r"^[0-9]+[MG]$")  # THP is off by default below 512 MiB
    cpus: int = Field(2, ge=1, le=64)
    #: the guest kernel's command line (QEMU -append), checked like system.kernel_cmdline
    cmdline: KernelCmdline = ["console=ttyS0", "nohz_full=1", "panic=-1"]
    timeout_s: int = Field(180, ge=10)

    @model_validator(mode="after")
    def _nohz_full_cpus_exist(self):
        from .kernel_cmdline import value_of

        cpus = value_of(self.cmdline, "nohz_full")
        if cpus is None:
            return self
        problem = nohz_full_problem(cpus, self.cpus)
        if problem:
            raise ValueError(f"key `kernel.boot.cmdline`: nohz_full={cpus} with kernel.boot.cpus {self.cpus}: {problem}")
        return self


def lsmod_modules(text: str) -> list[str]:
    """The module names of an ``lsmod`` output (the header and blank lines skipped)."""
    import re

    return [line.split()[0] for line in text.splitlines()
            if line.split() and line.split()[0] != "Module" and re.fullmatch(r"[A-Za-z0-9_]+", line.split()[0])]


def nohz_full_problem(cpulist: str, n_cpus: int) -> str | None:
    """Why the kernel would drop ``nohz_full=<cpulist>`` on a machine with ``n_cpus`` CPUs, or None.

    It ignores CPUs that do not exist and keeps the boot CPU 0 for housekeeping."""
    import re

    if not re.fullmatch(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*", cpulist):
        return "not a CPU list (write e.g. 1-3 or 1,3)"
    cpus = set()
    for part in cpulist.split(","):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    if max(cpus) >= n_cpus:
        return f"CPU {max(cpus)} does not exist on {n_cpus} CPU(s) (they are 0-{n_cpus - 1}): the kernel ignores the list"
    if 0 in cpus:
        return "CPU 0 keeps the timekeeping (housekeeping) and cannot be tickless: start the list at 1"
    return None


class KernelInstall(Section):
    """Putting the built kernel into the target root and adding a systemd-boot entry."""

    enabled: bool = False
    method: Literal["bindeb-pkg", "make-install"] = "make-install"
    #: the target root (a mounted image or disk); "auto" = the base-system phase's mount point
    root: str = "auto"
    #: the ESP as seen from inside the root (systemd-boot reads kernels from the ESP); phase 02's
    #: image mounts it at /efi
    esp: str = "/efi"
    entry_title: str = "Synapse OS"
    #: added to the target's command line (phase 02's /etc/kernel/cmdline) in this kernel's entry,
    #: e.g. nohz_full=<cpus>, without which NO_HZ_FULL does nothing; names already there are kept.
    #: Checked like system.kernel_cmdline (mitigations=off also needs machine.trusted_offline)
    cmdline: KernelCmdline = Field(default_factory=list)
    #: make the new kernel's entry the default in loader.conf (the distribution's stays in the menu)
    make_default: bool = True


class Kernel(Section):
    enabled: bool = False
    #: debian-package: /usr/src/linux-source-<version>.tar.xz (apt); git: a stable tag;
    #: linux-tkg: Arch users' scripts, planned and documented only
    source: Literal["debian-package", "git", "linux-tkg"] = "debian-package"
    version: str = Field("6.12", pattern=r"^[0-9]+\.[0-9]+$")  # debian-package: linux-source-<version>
    git_url: str = "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git"
    git_ref: str | None = None  # e.g. v6.12.20; git source only
    tkg_url: str = "https://github.com/Frogging-Family/linux-tkg.git"
    #: starting config: tinyconfig (+ minimum), defconfig, the distribution's config, the
    #: running kernel's /proc/config.gz, or a file
    base_config: Literal["tinyconfig", "defconfig", "distro", "running", "file"] = "tinyconfig"
    base_config_file: str | None = None
    #: Debian: /usr/src/linux-config-<version>/config.<flavour>.xz
    distro_flavour: str = "amd64_none_amd64"
    #: symbols switched on after tinyconfig (only used with base_config: tinyconfig)
    minimum: list[str] = Field(default_factory=lambda: list(TINY_MINIMUM))
    #: fragments from the tree's kernel/configs or arch/x86/configs merged after the base
    extra_fragments: list[str] = Field(default_factory=list)
    #: the table: SYMBOL (no CONFIG_ prefix) -> y | n | m | value
    options: dict[str, str] = Field(default_factory=lambda: dict(BLUEPRINT_TABLE))
    #: apply known renames (SPECULATION_MITIGATIONS -> CPU_MITIGATIONS) and turn choice members'
    #: siblings off; false applies the table literally (to show what the blueprint's way does)
    resolve: bool = True
    localmodconfig: bool = False
    lsmod_file: str | None = None  # module list captured on the target (`lsmod > file`)
    #: modules localmodconfig must keep although the target had not loaded them when the list was
    #: captured (e.g. what the target's initrd config adds: phase 02's dracut add_drivers)
    keep_modules: list[str] = Field(default_factory=list)
    jobs: BuildJobs = "auto"
    #: bzImage: kernel only (the tiny test kernel); all: kernel + modules; bindeb-pkg: .deb files
    build_target: Literal["bzImage", "all", "bindeb-pkg"] = "bzImage"
    localversion: str = Field("-synapse", pattern=r"^[A-Za-z0-9._+-]*$")
    build: bool = True
    build_timeout_s: int = Field(4 * 3600, ge=60)
    boot: KernelBoot = KernelBoot()
    install: KernelInstall = KernelInstall()


    @field_validator("options", mode="before")
    @classmethod
    def _values_as_text(cls, v):
        # YAML reads `yes`/`true` as booleans and `300` as a number; Kconfig wants y/n and text
        if isinstance(v, dict):
            return {str(k): ("y" if x is True else "n" if x is False else str(x)) for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.base_config == "file" and not self.base_config_file:
            raise ValueError("kernel.base_config is 'file' but kernel.base_config_file is empty: give the path")
        if self.source == "git" and not self.git_ref:
            raise ValueError("kernel.source is 'git' but kernel.git_ref is empty: name a stable tag, e.g. v6.12.20")
        if self.localmodconfig and not self.lsmod_file:
            raise ValueError("kernel.localmodconfig is true but kernel.lsmod_file is empty: run `lsmod > lsmod.txt` "
                             "on the target machine and give that file")
        import re

        for k in self.options:
            if k.startswith("CONFIG_"):
                raise ValueError(f"kernel.options: write {k[7:]!r}, not {k!r} (no CONFIG_ prefix)")
            if not re.fullmatch(r"[A-Z0-9_]+", k):
                raise ValueError(f"key `kernel.options`: {k!r} is not a Kconfig symbol (capitals, digits and _, "
                                 "e.g. NO_HZ_FULL)")
        if self.localmodconfig and self.lsmod_file:
            from ..core.paths import resolve_in_project

            # a list that is not there yet is a warning (captured on the target later: a plan shows
            # the phase); a list that is there but names no module would strip every module
            listed = resolve_in_project(self.lsmod_file)
            if listed.is_file() and not lsmod_modules(listed.read_text(errors="replace")):
                raise ValueError(f"key `kernel.lsmod_file`: {listed} names no modules: localmodconfig would turn "
                                 "every module off; run `lsmod > FILE` on the target machine with its hardware in "
                                 "use and name that file")
        return self
