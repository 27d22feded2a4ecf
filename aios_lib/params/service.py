"""Phase 6: the inference service, hardening, read-only root and the distributable image."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section, refuse
from .types import PositiveSize

#: Blueprint 5.1's "typical desktop bloat" (absent on a minbase Debian, masked anyway so a later
#: package install cannot bring them back), plus what a minbase Debian 12 runs or schedules that an
#: inference appliance does not need.
DEFAULT_MASK = [
    "wpa_supplicant.service", "accounts-daemon.service", "upower.service", "switcheroo-control.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "man-db.timer", "systemd-tmpfiles-clean.timer", "cron.service",
    "systemd-timesyncd.service", "xfs_scrub_all.timer",
    # an appliance has no login on the serial console (only on the local tty1). (agetty's vhangup()
    # once cut off the QEMU guest check's output on ttyS0; the check now reports on ttyS1.)
    "serial-getty@ttyS0.service",
]


class Service(Section):
    enabled: bool = False
    #: what the image runs: llama-server (Synapse OS) or the blueprint's ollama (optional alternative;
    #: the binary is not bundled, install it yourself)
    engine: Literal["llama-server", "ollama"] = "llama-server"
    user: str = Field("ai", pattern=r"^[a-z_][a-z0-9_-]{0,30}$")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    #: IPAddressAllow= of the unit (IPAddressDeny=any is always set): "localhost" or CIDRs of the
    #: serving network, e.g. ["localhost", "192.168.10.0/24"]
    allow_networks: list[str] = ["localhost"]
    #: where llama.cpp's bin folder (launcher + lib*.so) is installed in the image
    install_dir: str = "/opt/synapse/llama"
    #: the persistent data partition (models and results survive the read-only root)
    data_dir: str = "/var/ai-data"
    data_size: PositiveSize = Field("1G", pattern=r"^[0-9]+[MG]$")
    #: RAM of the machine the service runs on; "auto": the phase 01 survey, else this host
    ram_gib: float | Literal["auto"] = "auto"
    memory_reserve_gib: float = Field(4.0, ge=0.25)  # MemoryHigh = RAM - reserve
    nice: int = Field(-5, ge=-20, le=19)
    oom_score_adjust: int = Field(-500, ge=-1000, le=1000)
    mlock: bool = False
    #: "auto": what the phase 05 benchmark chose, else the physical core count from phase 01
    threads: int | Literal["auto"] = "auto"
    cpus: list[int] | Literal["auto"] = "auto"
    ctx_size: int = Field(4096, ge=256)
    parallel: int = Field(1, ge=1, le=64)
    extra_args: list[str] = Field(default_factory=list)
    #: a tuned profile (the tuned-profile.yaml `aios tune` writes, relative to this file or the
    #: project): its threads, nice value, llama-server flags and THP mode become these parameters
    profile: str | None = None
    #: which llama.cpp build goes into the image: avx2 (the blueprint's target ISA; also what QEMU's
    #: TCG emulates), generic (baseline x86-64) or native (this host's -march=native)
    image_build: Literal["avx2", "generic", "native"] = "avx2"
    ssh: bool = False  # local-only by default: ssh is not installed and ssh.service is masked
    read_only_root: bool = True
    mask_units: list[str] = Field(default_factory=lambda: list(DEFAULT_MASK))
    #: idle-CPU measurement window in the booted image and the blueprint's goal
    idle_window_s: int = Field(30, ge=5, le=600)
    idle_goal_pct: float = 0.1
    #: RAM and CPUs of the QEMU guest that checks the image
    vm_ram_mib: int = Field(3072, ge=1024)
    vm_cpus: int = Field(2, ge=1, le=64)
    #: zstd level of the distributable image
    zstd_level: int = Field(3, ge=1, le=19)

    @field_validator("mask_units")
    @classmethod
    def _unit_names(cls, v: list[str]) -> list[str]:
        from .systemd_values import unit_name

        refuse(unit_name(u) for u in v)
        return v

    @field_validator("user")
    @classmethod
    def _not_root(cls, v: str) -> str:
        if v == "root":
            raise ValueError("the inference service must not run as root (User=root gives a network-facing "
                             "server every privilege): use an unprivileged user such as ai")
        return v

    @field_validator("host")
    @classmethod
    def _listen_address(cls, v: str) -> str:
        from .systemd_values import listen_address

        refuse([listen_address(v)])
        return v

    @field_validator("allow_networks")
    @classmethod
    def _ip_address_allow(cls, v: list[str]) -> list[str]:
        from .systemd_values import ip_address_allow

        problems = [p for x in v if (p := ip_address_allow(x))]
        if not v:
            problems.append("an empty list leaves IPAddressDeny=any alone: nobody, not even localhost, could reach "
                            "the service; list at least localhost")
        if problems:
            raise ValueError("\n".join(problems))
        return v

    @field_validator("install_dir", "data_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        from .systemd_values import absolute_path

        refuse([absolute_path(v)])
        return v

    @field_validator("extra_args")
    @classmethod
    def _one_line_args(cls, v: list[str]) -> list[str]:
        from .systemd_values import unit_value

        refuse(unit_value(a) for a in v)
        return v

    @field_validator("threads")
    @classmethod
    def _threads(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("needs at least 1 thread (or auto)")
        return v

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v):
        if v == "auto":
            return v
        if not v:
            raise ValueError("an empty CPU list pins the service nowhere; list CPUs or write auto")
        if any(c < 0 for c in v) or len(set(v)) != len(v):
            raise ValueError(f"{v}: CPU numbers are 0 or more, each once")
        return v

    @field_validator("ram_gib")
    @classmethod
    def _ram(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("RAM must be more than 0 GiB (or auto)")
        return v

    @model_validator(mode="after")
    def _memory_high_leaves_room(self):
        # units.memory_high refuses a MemoryHigh below 256 MiB when the unit is written
        if self.ram_gib != "auto" and (self.ram_gib - self.memory_reserve_gib) * 1024 < 256:
            raise ValueError(f"key `service.memory_reserve_gib`: MemoryHigh = service.ram_gib {self.ram_gib:g} GiB minus "
                             f"the reserve {self.memory_reserve_gib:g} GiB leaves less than 256 MiB for the model; "
                             "lower the reserve or raise ram_gib")
        if self.threads != "auto" and self.cpus != "auto" and self.threads > len(self.cpus):
            raise ValueError(f"key `service.threads`: {self.threads} threads on the {len(self.cpus)} CPU(s) of "
                             f"service.cpus {self.cpus} contradict each other (threads would share CPUs and wait "
                             "for each other); use at most as many threads as CPUs")
        return self
