# %% [markdown]
# # Phase 1: research & prep
#
# The blueprint's Phase 1 has two items: *"Verify i7 Gen (Broadwell? Skylake?) for AVX-512 support
# (unlikely strictly AVX2)"* and *"Select AI-OS name"*. The name is settled (**Synapse OS**; the
# blueprint's suggestion was "NeuroKernel"). The first item hides the questions every later phase
# depends on, and this notebook answers them from facts read off the machine it runs on:
#
# 1. which CPU generation this is, and which vector extensions (AVX2, AVX-512, AVX-VNNI, AMX) it has,
#    because they decide which llama.cpp kernels run;
# 2. how many physical cores it has: the starting thread count that Phase 5 measures around;
# 3. how much memory it has, and so the largest GGUF model that fits beside the OS at Q4_K_M and Q5_K_M;
# 4. whether it boots through UEFI (systemd-boot) or legacy BIOS (GRUB);
# 5. which disk an install would go to (a suggestion only: this phase writes nothing).
#
# Every fact comes from a read-only command (`cat /proc/cpuinfo`, `lscpu`, `lsblk`, files under
# `/sys`), run through the runner, so each is in the run's `commands.jsonl`. Read-only commands run in
# plan mode too: this notebook gives the same answers whether it runs or plans.

# %% tags=["parameters"]
# A template: `make lab` (`aios lab`) opens a copy whose outputs become a run's record.
# Opened here, the record is scratch (outputs/_scratch/) and what you save changes the template.
params_file = "parameters/default.yaml"
run_dir = None
# plan = True lists every command and changes nothing; this phase only reads the machine,
# so plan = False (what `aios run` passes) gives the same answers.
plan = True

# %%
import aios_lib
import pandas as pd
from aios_lib.runtime import compiler
from aios_lib.facts import research
from aios_lib.facts.survey import survey
pd.set_option("display.max_colwidth", 200)  # show flag lists and mitigation strings whole
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="01")
run

# %% [markdown]
# ## The survey
#
# One call reads every fact: CPU (cpuinfo, `lscpu -J`, `lscpu -p`, hybrid core lists, cache sizes),
# memory (`/proc/meminfo`, `dmidecode -t memory` where SMBIOS is readable), NUMA nodes, disks
# (`lsblk -J`), firmware (`/sys/firmware/efi`), virtualization (`systemd-detect-virt`), kernel
# (release, command line, THP, cpufreq governor, CPU vulnerability mitigations) and GPUs (`lspci`).
# Commands that are normally absent on some machines (dmidecode in a VM, nvidia-smi without a
# driver) may fail without stopping the survey. The whole survey is recorded in `results.json` as
# `01/survey`; later phases read it from there (physical cores, logical CPUs, RAM), never from the
# live system.

# %%
s = survey(run.runner)
run.record("survey", s)
run.record("summary", research.recorded_summary(s))
research.summary_table(s)

# %% [markdown]
# ## 1. Which CPU, and which vector extensions?
#
# The blueprint expects "an i7 with AVX2" and asks whether AVX-512 is there. That matters because
# llama.cpp's CPU backend (ggml) picks its matrix kernels at build time from the extensions the
# compiler may use: AVX2 with FMA and F16C is the baseline for fast quantized inference; AVX-512,
# AVX-VNNI and AMX add faster paths. The generation is derived from the CPUID family/model/stepping
# rather than the marketing name, which hypervisors often replace. A hypervisor may also report
# another model number than its host's, or hide extensions the host has, so the generation is
# cross-checked against the ISA flags and against what gcc makes of `-march=native`; where they
# disagree the table says so in a row of its own, and Synapse goes by the flags (they are what code
# may use). On hybrid Intel CPUs (Alder Lake and later) the table also shows the P-core/E-core
# split when the kernel or `lscpu` reveals it.

# %%
native = compiler.native_target(run)
research.cpu_table(s, native.to_dict())

# %%
research.cpu_generation(s, native.to_dict())

# %%
research.isa_support(s)

# %% [markdown]
# ### Advertised is not usable
#
# A flag in `/proc/cpuinfo` means CPUID *advertises* the extension, as the hypervisor presents it.
# Two more layers decide whether code may use it: the kernel must *enable* the extension's
# register state (XCR0, read with `xgetbv`; AMX additionally needs a per-process permission, and
# a small tile multiply here checks that AMX really computes), and the build must *run*: Phase 4
# verifies every llama.cpp build on a real model before anything uses it, and switches off an
# extension whose code path crashes here. This table shows the first two layers and gcc's view of
# `-march=native`; Phase 4 adds the third.

# %%
research.isa_layers(s["cpu"], s["xstate"], native.to_dict())

# %% [markdown]
# ## 2. Physical cores: where thread tuning starts
#
# The blueprint sets `N_THREADS = physical cores` and avoids SMT siblings, which share a core's
# vector units and caches. That is a sound starting point but not a result: token generation is
# limited by memory bandwidth and usually stops scaling before the last core, and on hybrid CPUs
# E cores can slow the P cores down. So this phase only names the candidates; Phase 5 measures them.

# %%
research.thread_start(s)

# %% [markdown]
# ## 3. Memory: the largest GGUF that fits
#
# A llama.cpp model is memory-mapped and must stay resident: every generated token reads every
# weight once. The budget for the model file is the RAM minus a reserve for the OS and a reserve for
# the KV cache and compute buffers (both stated below and adjustable through the function's
# arguments). The parameter count follows from the average bits per weight of the quantization
# (Q4_K_M ≈ 4.85, Q5_K_M ≈ 5.69 for llama-style models).

# %%
research.model_fit(s)

# %%
research.memory_answer(s)

# %% [markdown]
# ## 4. Firmware: UEFI or BIOS?
#
# The blueprint prefers systemd-boot, which exists only for UEFI. The kernel exposes
# `/sys/firmware/efi` exactly when the system was booted through UEFI, so its presence decides.
# Some virtual machines run no firmware at all: the hypervisor loads the kernel itself. Then there
# are no SMBIOS tables (`/sys/firmware/dmi` is missing) and the kernel command line carries no boot
# loader's mark (`BOOT_IMAGE=`, `initrd=`), and the answer says so instead of guessing "BIOS".

# %%
research.boot_answer(s)

# %% [markdown]
# ## 5. Disks: which one would be the install target?
#
# The blueprint's Phase 2 partitions `/dev/nvme0n1` without asking. Synapse never guesses a device
# to erase: this section only *suggests* the largest internal disk that is not in use, and explains
# why each other disk was left out. Installing to a disk additionally requires naming it in the
# parameter file and confirming it (`target.confirm`); otherwise every destructive step is refused.

# %%
research.disks_table(s)

# %%
research.install_target(s)

# %% [markdown]
# ## The rest of the system
#
# Facts later phases tune or compare against: transparent huge pages (the blueprint wants
# `madvise`), the cpufreq governor (absent in most VMs), NUMA layout (each node's memory, summed and
# checked against the total: a gap is flagged), virtualization, and the kernel's
# CPU vulnerability mitigations. Mitigations cost performance on some CPUs; Synapse only turns them
# off (`mitigations=off`) on a machine the parameters declare trusted and offline.

# %%
research.system_table(s)

# %%
research.vulnerabilities_table(s)

# %% [markdown]
# ## Answers
#
# The blueprint's Phase 1 questions, answered for this machine. They are recorded in `results.json`
# as `01/answers` together with the numbers behind them.

# %%
answers = research.answer_all(s, native=native.to_dict())
run.record("answers", answers.to_dict())
answers.table()

# %% [markdown]
# ## Commands
#
# Everything this phase ran, with what each command gave. All are read-only probes: nothing on the
# machine was changed. A command that is absent here (no hybrid core lists, no EFI, no cpufreq in a
# VM) is a fact too: the survey reads it as "not present".

# %%
research.survey_commands(run.runner.history)
