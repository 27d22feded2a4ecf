import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def runner(tmp_path):
    from aios_lib.core.journal import Journal
    from aios_lib.core.runner import Runner

    return Runner(journal=Journal(tmp_path / "commands.jsonl"), phase="test")


@pytest.fixture
def fixtures():
    return FIXTURES


@pytest.fixture
def make_run(tmp_path):
    """A real run (not plan mode) with default parameters plus overrides, recording into tmp_path."""
    from aios_lib.context import open_run
    from aios_lib.params import parse_params

    def make(overrides: dict | None = None, plan: bool = False, phase: str = "test"):
        data = {"schema_version": 1}
        for k, v in (overrides or {}).items():
            data[k] = v
        return open_run(parse_params(data, "<test>"), run_dir=tmp_path / "run", plan=plan, phase=phase)

    return make


# ---- Phase 4 (llama.cpp + model), shared by the benchmark, panel and service tests ----------
def _phase4_run(tmp_path_factory, name):
    from aios_lib.context import open_run
    from aios_lib.params import parse_params

    return open_run(parse_params({"schema_version": 1}, "<test>"), run_dir=tmp_path_factory.mktemp(name),
                    plan=False, phase="04")


@pytest.fixture(scope="session")
def llama_native(tmp_path_factory):
    """The real native llama.cpp build (llama-bench, llama-server, llama-quantize) for the default
    parameters as configured, not yet verified: built once (about 5 minutes on 2 cores), then taken
    from ~/.cache/synapse. It may crash on this machine (AMX): use ``llama_build`` to run things."""
    from aios_lib.runtime import llama

    return llama.build(_phase4_run(tmp_path_factory, "llama-build"))


@pytest.fixture(scope="session")
def llama_working(tmp_path_factory, llama_native, smollm2):
    """The native build verified on SmolLM2, or the build that works here when it does not
    (:func:`aios_lib.runtime.verify.working_build`). A WorkingBuild."""
    from aios_lib.runtime import verify

    return verify.working_build(_phase4_run(tmp_path_factory, "llama-working"), smollm2.path)


@pytest.fixture(scope="session")
def llama_build(llama_working):
    """The verified llama.cpp build everything else runs (a LlamaBuild)."""
    assert llama_working.verification.ok, llama_working.reason
    return llama_working.build


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (sha256-verified, cached). A ModelInfo."""
    from aios_lib.runtime import model

    return model.provision(_phase4_run(tmp_path_factory, "smollm2"))


#: the kernel's THP switch, which the live-settings tests change and put back
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.fixture
def thp_writable() -> Path:
    """THP can be changed here. The suite runs as root (the README's commands, like the disk-image and
    fleet tests), on a kernel with transparent huge pages (every Debian and Ubuntu kernel): where
    that is not so the test fails and says why, it does not pass unseen."""
    if os.geteuid() != 0:
        pytest.fail("changing transparent huge pages needs root: run `make test` as root, as the README says",
                    pytrace=False)
    if not THP_ENABLED.exists():
        pytest.fail(f"{THP_ENABLED} is missing: this kernel has no transparent huge pages, which Synapse's "
                    "live settings change; run the suite on a kernel built with CONFIG_TRANSPARENT_HUGEPAGE",
                    pytrace=False)
    return THP_ENABLED
