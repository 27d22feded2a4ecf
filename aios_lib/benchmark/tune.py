"""The tuner: search the runtime and host settings for this machine's fastest configuration, stop for
a reason, and write the winner as a profile the service deploys.

Why racing and not a black-box optimiser: on these machines the spread between two invocations
of the same command is as large as the effects being searched for, so one number per trial (what
Optuna's samplers model) cannot rank candidates. Racing measures candidates in rounds, paired in
time (every candidate of a race runs once per round, in an order drawn per round), and decides from
paired ratios:

* a candidate is **eliminated** when it is *clearly worse* than the current best after 2 rounds
  (ratio below 1 - 3 x band overall and below 1 - band in every round: a 2-round t-interval has
  one degree of freedom and could drop nothing), or, from ``min_rounds`` on, when its ratio to the
  best has a 99% CI entirely below 1;
* a race **stops** when one candidate is left (the best is separated from every other), when every
  survivor's CI against the best lies inside the equivalence band, when it is *indifferent* (no
  survivor is ahead of the one that would be kept by more than the band and none can be by more
  than 3 x band at 90%: further rounds cannot change the decision by much, and proving equivalence
  within the band itself would take about ten rounds per race at this machine's noise), or when
  its budget ends; the record says which. When it stops without a clear winner, the cheapest
  survivor (the one closest to llama.cpp's defaults) wins;
* the **reference** configuration (llama.cpp's defaults on the verified build) is measured at the
  start (the warm-up runs it until consecutive invocations agree), in every race where it is a
  candidate anyway (the first race, and each race until something beats the defaults), and at the
  end: ``aios tune``'s confirmation races the winner against it (and stock), and :func:`search`
  (what the benchmark times) ends with the last race when the reference was a candidate there,
  otherwise with a short confirmation race. It no longer runs in the first round of every other
  race: within a race the candidates are paired with each other round by round, which is what
  cancels drift for every decision, and the extra invocation per race cost as much as the search
  of a small space. Drift over the whole search is first vs last; ``ref_every=k`` puts the
  reference back into a race whenever k races have passed without it, for long searches.

The space is a product of axes (threads, polling, priority, load mode, CPU placement, batch size,
KV cache type, THP mode and defrag, scheduling policy and nice, ...). The search races one axis at a
time, the others held at the current best (coordinate racing), in the order of the parameters, and
repeats the sweep while it still changes something and the budget lasts; a later sweep races an axis
again only if another axis changed after its last race (else it would repeat that race). Every
trial is appended to a JSON-lines file in the run folder as it finishes, so an interrupted tune
resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..measure import stats


# ---- the space -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Level:
    """One value of an axis: llama.cpp flags, and/or process settings, and/or live host settings."""

    name: str
    flags: tuple[tuple[str, str], ...] = ()
    process: tuple[tuple[str, Any], ...] = ()  # ProcessSettings fields
    system: tuple[tuple[str, str], ...] = ()

    def shown(self) -> str:
        return self.name


@dataclass(frozen=True)
class Axis:
    name: str
    levels: tuple[Level, ...]
    default: int = 0  # the level llama.cpp / the host has without Synapse (the "cheaper" one)
    why: str = ""


Candidate = tuple[int, ...]  # one level index per axis


def label_of(space: Sequence[Axis], cand: Candidate) -> str:
    parts = [ax.levels[i].name for ax, i in zip(space, cand) if i != ax.default]
    return ", ".join(parts) or "defaults"


def changes(space: Sequence[Axis], cand: Candidate) -> int:
    """How many axes differ from their default: the cost a tie is broken by."""
    return sum(i != ax.default for ax, i in zip(space, cand))


def default_candidate(space: Sequence[Axis]) -> Candidate:
    return tuple(ax.default for ax in space)


def all_candidates(space: Sequence[Axis]) -> list[Candidate]:
    import itertools

    return [tuple(c) for c in itertools.product(*[range(len(ax.levels)) for ax in space])]


def knobs_of(space: Sequence[Axis], cand: Candidate) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """flags, process settings and live host settings of a candidate."""
    flags: dict[str, str] = {}
    proc: dict[str, Any] = {}
    system: dict[str, str] = {}
    for ax, i in zip(space, cand):
        lv = ax.levels[i]
        flags.update(dict(lv.flags))
        proc.update(dict(lv.process))
        system.update(dict(lv.system))
    return flags, proc, system


# ---- racing ------------------------------------------------------------------------------------------------
#: a race looks at its data after every round; deciding at 99% keeps the chance of eliminating a
#: candidate that is not worse near 5% over the looks. Equivalence is the usual two one-sided tests
#: at 5% each, i.e. a 90% interval inside the band.
ELIMINATE_CONF = 0.99
EQUIVALENT_CONF = 0.90
#: "clearly worse" after CLEAR_ROUNDS rounds: the ratio to the best is below 1 - CLEAR_FACTOR x band
#: overall AND below 1 - band in every one of those rounds. A t-interval over 2 rounds has 1 degree
#: of freedom (its 99% quantile is 64), so it could drop nothing there; a candidate several bands
#: behind in every paired round is not one a longer race would bring back (threads 1 of 2, THP off
#: where THP matters), and dropping it after 2 rounds saves the race's remaining rounds.
CLEAR_ROUNDS = 2
CLEAR_FACTOR = 3.0
#: "indifferent": no survivor is ahead of the one that would be kept by more than the band, and
#: none can be ahead by more than INDIFFERENT_FACTOR x band at 90%: more rounds could change the
#: decision only by a small amount (what the issue calls "further rounds cannot change the decision
#: by more than the equivalence band"), while proving equivalence within the band itself takes ~10
#: rounds when one invocation varies by 2-4% (this machine) and would be spent on axes that do not
#: matter.
INDIFFERENT_FACTOR = 3.0
#: measure one round: {label: candidate} -> {label: value (t/s; higher is better)}; the order is the
#: function's business (it gets them shuffled)
Measure = Callable[[list[tuple[str, Candidate]], int], dict[str, float]]
REFERENCE = "reference: defaults"


@dataclass
class Race:
    """One race: candidates measured in rounds until a reason to stop."""

    stage: str
    labels: dict[str, Candidate]
    reference: str  # the reference's label when it ran in this race, else ""
    rounds: list[dict[str, float]] = field(default_factory=list)
    eliminated: dict[str, int] = field(default_factory=dict)  # label -> the round it went
    stop: str = ""
    winner: str = ""
    incumbent: str = ""  # the candidate that was the current best when the race began
    rules: dict[str, str] = field(default_factory=dict)  # label -> the rule that eliminated it

    def values(self, label: str) -> list[float]:
        return [r[label] for r in self.rounds if label in r]

    def paired(self, a: str, b: str, band: float, conf: float = 0.95) -> stats.PairedRatio:
        rs = [r for r in self.rounds if a in r and b in r]
        return stats.paired_ratio([r[a] for r in rs], [r[b] for r in rs], a, b, conf=conf, band=band)

    def mean(self, label: str) -> float:
        v = self.values(label)
        return sum(v) / len(v) if v else float("nan")

    def clearly_worse(self, best: str, lab: str, band: float) -> bool:
        """``lab`` below ``best`` by more than CLEAR_FACTOR bands overall and by more than the band
        in every paired round (at least CLEAR_ROUNDS of them)."""
        pr = self.paired(best, lab, band)
        if pr.rounds < CLEAR_ROUNDS or pr.ratio != pr.ratio:
            return False
        return pr.ratio < 1 - CLEAR_FACTOR * band and all(x < math.log(1 - band) for x in pr.log_ratios)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "labels": {k: list(v) for k, v in self.labels.items()},
                "reference": self.reference, "rounds": self.rounds, "eliminated": self.eliminated,
                "rules": self.rules, "stop": self.stop, "winner": self.winner, "incumbent": self.incumbent}


def race(stage: str, cands: dict[str, Candidate], reference: tuple[str, Candidate] | None, measure: Measure, *,
         space: Sequence[Axis], band: float, min_rounds: int = 3, max_rounds: int = 12,
         deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
         store: Callable[[str, int, dict], None] | None = None,
         replay: dict[tuple[str, int], dict] | None = None, incumbent: str = "") -> Race:
    """Race ``cands`` until one is left, all survivors are equivalent to the best within ``band``
    or indifferent (then the one with the fewest changes from the defaults wins), ``max_rounds`` or
    ``deadline``. ``reference``, when given and not a candidate, runs in the first round too (the
    search decides when: see :func:`coordinate_search`). A candidate clearly worse than the best is
    dropped from round CLEAR_ROUNDS; CI-based decisions start at ``min_rounds``. ``replay`` holds
    rounds measured before an interruption."""
    ref_is_candidate = next((lab for lab, c in cands.items() if reference and c == reference[1]), None)
    ref_label = ref_is_candidate or (reference[0] if reference else "")
    race_ = Race(stage, dict(cands), ref_label, incumbent=incumbent)
    alive = list(cands)
    round_no = 0

    def drop(lab: str, rule: str) -> None:
        alive.remove(lab)
        race_.eliminated[lab] = round_no
        race_.rules[lab] = rule

    while True:
        todo = [(lab, cands[lab]) for lab in alive]
        if round_no == 0 and reference and ref_is_candidate is None:
            todo.append(reference)
        key = (stage, round_no)
        if replay and key in replay:
            values = replay[key]
        else:
            values = measure(todo, round_no)
            if store:
                store(stage, round_no, values)
        race_.rounds.append(values)
        round_no += 1
        if len(alive) <= 1:
            race_.stop = "one candidate"
            break
        if round_no >= CLEAR_ROUNDS:
            best = max(alive, key=race_.mean)
            for lab in [x for x in alive if x != best and race_.clearly_worse(best, x, band)]:
                drop(lab, f"clearly worse: below the best by more than {CLEAR_FACTOR:g} bands overall and by "
                          "more than the band in every round")
        if round_no >= min_rounds:
            best = max(alive, key=race_.mean)
            for lab in [x for x in alive if x != best
                        and race_.paired(best, x, band, ELIMINATE_CONF).ci_high < 1]:
                drop(lab, f"its {ELIMINATE_CONF:.0%} CI against the best lies below 1")
        if len(alive) == 1:
            race_.stop = "separated: every other candidate was eliminated (clearly worse, or its CI against the " \
                         "best lies below 1)"
            break
        if round_no >= min_rounds:
            best = max(alive, key=race_.mean)
            if all(race_.paired(best, lab, band, EQUIVALENT_CONF).verdict == "equivalent"
                   for lab in alive if lab != best):
                race_.stop = (f"the remaining candidates are equivalent to the best within +-{band:.0%}: the one "
                              "closest to the defaults is kept")
                break
            kept = _kept(race_, alive, space, band)
            if all(_indifferent(race_.paired(kept, lab, band, EQUIVALENT_CONF), band) for lab in alive if lab != kept):
                race_.stop = (f"indifferent: no candidate is ahead of `{kept}` by more than the band "
                              f"(+-{band:.0%}) and none can be by more than {INDIFFERENT_FACTOR * band:.0%} at "
                              f"{EQUIVALENT_CONF:.0%}; it is kept")
                break
        if round_no >= max_rounds:
            race_.stop = f"maximum of {max_rounds} rounds"
            break
        if deadline is not None and clock() >= deadline:
            race_.stop = "budget ended"
            break
    race_.winner = _kept(race_, alive, space, band)
    return race_


def _kept(race_: Race, alive: list[str], space: Sequence[Axis], band: float) -> str:
    """Among the survivors that are not shown worse than the best, the cheapest (ties: the best mean)."""
    best = max(alive, key=race_.mean)
    tied = [lab for lab in alive
            if lab == best or race_.paired(best, lab, band, ELIMINATE_CONF).verdict in ("equivalent", "not shown")]
    return min(tied, key=lambda lab: (changes(space, race_.labels[lab]), -race_.mean(lab)))


def _indifferent(pr: stats.PairedRatio, band: float) -> bool:
    """``pr`` = other / kept: the other is not ahead by more than the band, and its 90% upper bound
    is below INDIFFERENT_FACTOR bands."""
    return pr.rounds >= 2 and pr.ratio == pr.ratio and pr.ratio < 1 + band \
        and pr.ci_high < 1 + INDIFFERENT_FACTOR * band


def coordinate_search(space: Sequence[Axis], measure: Measure, *, band: float, min_rounds: int = 3,
                      max_rounds: int = 12, sweeps: int = 1, deadline: float | None = None,
                      clock: Callable[[], float] = time.monotonic, store=None, replay=None,
                      ref_every: int = 0) -> dict:
    """Race each axis's levels with the other axes at the current best; repeat while a sweep changes
    something. Returns the winner and every race.

    The reference (the defaults) runs in a race only where it is a candidate anyway (always the
    first race, and every race until something beats the defaults), or, with ``ref_every`` > 0, in
    the first round of a race when ``ref_every`` races have passed without it. A later sweep races
    an axis again only when another axis changed after its last race (otherwise the race would
    repeat one already run)."""
    current = default_candidate(space)
    ref = (REFERENCE, default_candidate(space))
    races: list[Race] = []
    last_raced: dict[int, int] = {}  # axis -> index of its last race
    last_change: dict[int, int] = {}  # axis -> index of the race that last changed it
    since_ref = 0
    changed = False
    for sweep in range(sweeps):
        changed = False
        for a, ax in enumerate(space):
            if len(ax.levels) < 2:
                continue
            if a in last_raced and not any(i > last_raced[a] for b, i in last_change.items() if b != a):
                continue
            if deadline is not None and clock() >= deadline:
                break
            cands = {}
            for i in range(len(ax.levels)):
                c = current[:a] + (i,) + current[a + 1:]
                cands[label_of(space, c)] = c
            with_ref = ref[1] in cands.values() or (ref_every > 0 and since_ref >= ref_every)
            r = race(f"sweep {sweep + 1}: {ax.name}", cands, ref if with_ref else None, measure, space=space,
                     band=band, min_rounds=min_rounds, max_rounds=max_rounds, deadline=deadline, clock=clock,
                     store=store, replay=replay, incumbent=label_of(space, current))
            since_ref = 0 if r.reference else since_ref + 1
            races.append(r)
            last_raced[a] = len(races) - 1
            won = r.labels[r.winner]
            if won != current:
                current, changed = won, True
                last_change[a] = len(races) - 1
        if not changed:
            break
    if not races:
        stop = "nothing to search"
    elif deadline is not None and clock() >= deadline:
        stop = "budget ended"
    elif changed:
        stop = f"the {sweeps} sweep(s) asked for are done (runtime.tune.sweeps)"
    else:
        stop = "a sweep changed nothing (no axis left that another changed after its race)"
    return {"winner": current, "label": label_of(space, current), "races": races, "stop": stop}


def search(space: Sequence[Axis], measure: Measure, *, band: float, min_rounds: int = 3, max_rounds: int = 12,
           sweeps: int = 1, deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
           store=None, replay=None, ref_every: int = 0) -> dict:
    """The whole search as the benchmark times it: the reference's warm-up (its first measurement),
    the coordinate races, and a confirmation of the winner against the reference in paired rounds
    (its last measurement: drift over the search is first vs last). The confirmation is the last
    race itself when the reference was a candidate there (they were paired directly); otherwise
    the winner and the reference race for up to ``min_rounds`` rounds, and the defaults are kept
    only if the winner is shown worse than them (each change was shown in its own race)."""
    ref = (REFERENCE, default_candidate(space))
    warm = warm_up(measure, ref, band, store=store, replay=replay)
    res = coordinate_search(space, measure, band=band, min_rounds=min_rounds, max_rounds=max_rounds, sweeps=sweeps,
                            deadline=deadline, clock=clock, store=store, replay=replay, ref_every=ref_every)
    winner, races = res["winner"], res["races"]
    last = races[-1] if races else None
    if last is None:  # nothing to search: the defaults, measured by the warm-up only
        confirm, ref_label = None, REFERENCE
    elif last.reference and last.labels.get(last.reference) == ref[1] and winner in last.labels.values():
        confirm, ref_label = last, last.reference
    else:
        label = label_of(space, winner)
        confirm = race("confirmation", {label: winner, REFERENCE: ref[1]}, None, measure, space=space, band=band,
                       min_rounds=min_rounds, max_rounds=max(CLEAR_ROUNDS, min_rounds), store=store,
                       replay=replay, incumbent=label)
        ref_label = REFERENCE
        if label in confirm.eliminated:
            winner = ref[1]
    first = [v for v in warm if v == v][-1:]
    last_ref = [v for v in confirm.values(ref_label) if v == v] if confirm else []
    res.update(winner=winner, label=label_of(space, winner), warm_up=warm, confirm=confirm,
               confirmed_by=("nothing searched" if confirm is None else
                             "the last race" if confirm is last else "a confirmation race"),
               drift={"first": first[0] if first else None,
                      "last": sum(last_ref) / len(last_ref) if last_ref else None,
                      "ratio": (sum(last_ref) / len(last_ref) / first[0]) if first and last_ref and first[0] else None})
    return res


# ---- the real measurement ---------------------------------------------------------------------------------------
def bench_measure(run, space: Sequence[Axis], side, model: str, threads: int, *, gen: int, live, seed: int = 0,
                  say=print) -> Measure:
    """A :data:`Measure` that runs llama-bench (one invocation per candidate per round, token
    generation) through the proof's configurations, live settings put in place per candidate."""
    from . import proof
    from ..measure.llama_bench import run_config
    from ..measure.sequential import _Invocation
    from ..settings.live import ProcessSettings

    rng = random.Random(seed)

    def measure(todo: list[tuple[str, Candidate]], round_no: int) -> dict[str, float]:
        order = list(todo)
        rng.shuffle(order)
        out: dict[str, float] = {}
        for label, cand in order:
            flags, proc, system = knobs_of(space, cand)
            t = int(flags.pop("-t", threads))
            c = proof.config(label, side, model, t, [], prompt=[], gen=[gen], reps=1)
            c.bench.flags.update(flags)
            c.process = ProcessSettings(**{**asdict(ProcessSettings()), **proc})
            c.system = system
            if live is not None:
                live.ensure(system, label)
            rec = run_config(run, _Invocation(c), round_no, None)
            rows = [r for r in rec["rows"] if r["test"].startswith("tg")]
            if rec["planned"]:
                out[label] = float("nan")
            elif rows:
                out[label] = sum(rows[0]["samples_ts"]) / len(rows[0]["samples_ts"])
            if say and not rec["planned"]:
                say(f"{label}: tg{gen} {out.get(label, float('nan')):.2f} t/s")
        return out

    return measure


# ---- the space of this machine -----------------------------------------------------------------------------
def space_for(run, axes: Sequence[str], *, nproc: int, default_threads: int, help_flags: set[str],
              unavailable: dict[str, str], numa_nodes: int = 1) -> tuple[list[Axis], list[dict]]:
    """The axes the parameters ask for, with levels this binary and host can apply; the rest are
    returned with the reason (never silently dropped)."""
    defs: dict[str, Axis] = {
        "threads": Axis("threads", tuple(Level(f"-t {t}", (("-t", str(t)),)) for t in range(1, nproc + 1)),
                        default=max(0, min(nproc, default_threads) - 1), why="token generation peaks where memory does"),
        "poll": Axis("poll", (Level("--poll 50", (("--poll", "50"),)), Level("--poll 0", (("--poll", "0"),))),
                     why="spinning threads compete with work on few cores"),
        "prio": Axis("prio", (Level("--prio 0"), Level("--prio 2", (("--prio", "2"),))), why="process priority"),
        "load": Axis("load", (Level("-lm mmap"), Level("-lm mmap+mlock", (("-lm", "mmap+mlock"),)),
                              Level("-lm none", (("-lm", "none"),))),
                     why="weights mapped, mapped and locked, or read into memory (where THP can back them)"),
        "placement": Axis("placement", (Level("--cpu-strict 0"), Level("--cpu-strict 1", (("--cpu-strict", "1"),))),
                          why="threads pinned one per CPU"),
        "thp": Axis("thp", (Level("THP as found"), Level("THP always", system=(("thp", "always"),))),
                    why="huge pages for anonymous memory"),
        "sched": Axis("sched", (Level("scheduling as found"),
                                Level("SCHED_BATCH, nice -5", process=(("policy", "batch"), ("nice", -5)))),
                      why="how the Phase 6 unit starts the service"),
        "ubatch": Axis("ubatch", (Level("-ub 512"), Level("-ub 256", (("-ub", "256"),))), why="prompt batch size"),
        "kv_q8": Axis("kv_q8", (Level("KV f16"), Level("KV q8_0", (("-fa", "on"), ("-ctk", "q8_0"), ("-ctv", "q8_0")))),
                      why="a smaller KV cache (needs flash attention)"),
        "numa": Axis("numa", (Level("--numa off"), Level("--numa distribute", (("--numa", "distribute"),))),
                     why="spread over NUMA nodes"),
    }
    out, left = [], []
    for name in axes:
        ax = defs[name]  # the parameter model allows only known axes (TUNE_AXES)
        if name == "numa" and numa_nodes <= 1:
            left.append({"axis": name, "why": "one NUMA node: nothing to distribute"})
            continue
        missing = sorted({f for lv in ax.levels for f, _ in lv.flags if help_flags and f not in help_flags})
        if missing:
            left.append({"axis": name, "why": f"this llama-bench has no {', '.join(missing)}"})
            continue
        host = [unavailable[s] for lv in ax.levels for s, _ in lv.system if s in unavailable]
        if host:
            left.append({"axis": name, "why": host[0]})
            continue
        if len(ax.levels) < 2:
            left.append({"axis": name, "why": "only one level on this machine"})
            continue
        out.append(ax)
    return out, left


# ---- trials on disk: resume -------------------------------------------------------------------------------
class TrialLog:
    """Every measured round, appended as a JSON line the moment it is measured (an interrupted tune
    loses at most the round in flight)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def replay(self) -> dict[tuple[str, int], dict]:
        out = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                out[(d["stage"], d["round"])] = d["values"]
        return out

    def store(self, stage: str, round_no: int, values: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"stage": stage, "round": round_no, "values": values, "time": time.time()}) + "\n")


PROFILE_VERSION = 1


def profile(space: Sequence[Axis], cand: Candidate, *, run_id: str, machine: str, evidence: dict,
            model: str, commit: str | None) -> dict:
    """The tuned profile: what the service and the image take (a file the parameters can name)."""
    flags, proc, system = knobs_of(space, cand)
    threads = int(flags.pop("-t")) if "-t" in flags else None
    from .proof import server_flags

    return {"profile_version": PROFILE_VERSION, "machine": machine, "tune_run": run_id, "commit": commit,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": model, "label": label_of(space, cand),
            "threads": threads, "server_flags": server_flags(flags), "process": proc, "system": system,
            "evidence": evidence}


def warm_up(measure: Measure, reference: tuple[str, Candidate], band: float, max_runs: int = 5,
            store=None, replay=None) -> list[float]:
    """Run the reference until two consecutive invocations agree (caches, page cache and clocks
    settled), at most ``max_runs`` times. Agree: the last is not faster than the one before by more
    than ``band``. A cold start makes early runs slower; a run that is no faster than its
    predecessor says the rise is over, and requiring the two to lie within the band both ways
    would wait on the invocation's own noise (larger than the band here), not on the warm-up."""
    vals: list[float] = []
    for i in range(max_runs):
        key = ("warm-up", i)
        v = replay[key] if replay and key in replay else measure([reference], i)
        if store and not (replay and key in replay):
            store("warm-up", i, v)
        x = v.get(reference[0], float("nan"))
        vals.append(x)
        if len(vals) >= 2 and vals[-1] == vals[-1] and vals[-2] == vals[-2] and vals[-2] > 0 \
                and vals[-1] / vals[-2] - 1 <= band:
            break
    return vals


def tune(run, inp, *, say=print) -> dict:
    """``aios tune``: search this machine's space within ``runtime.tune.budget_s``, confirm the winner
    against llama.cpp's defaults (and stock, where it runs) in paired rounds, write the profile."""
    from . import proof
    from ..facts import FACTS, gather
    from ..measure.sequential import measure as seq_measure
    from ..runtime.cpus import cpu_plan
    from ..settings.live import LiveState, ProcessSettings

    tp = run.params.runtime.tune
    band = run.params.runtime.bench.equivalence_band
    t_start = time.monotonic()
    deadline = t_start + tp.budget_s * 0.75  # the rest is for the confirmation
    stock, native, _v3, stock_note = proof.sides(run, inp)
    mm = inp.memory_model or inp.model
    model = str(mm["path"])
    default_t = cpu_plan(run, "bench", help_info=inp.help).bench_default or inp.nproc
    numa = gather(run.runner, FACTS["numa"]) if not run.plan else {}
    log = TrialLog(run.dir / "tune-trials.jsonl")
    replay = log.replay()
    rec: dict[str, Any] = {"planned": run.plan or inp.planned, "model": model, "resumed_rounds": len(replay),
                           "budget_s": tp.budget_s, "band": band, "stock_note": stock_note}
    with LiveState(run) as live:
        try:
            space, left = space_for(run, tp.axes, nproc=inp.nproc, default_threads=default_t,
                                    help_flags=set((inp.help or {}).get("flags") or []),
                                    unavailable=live.unavailable, numa_nodes=(numa or {}).get("count") or 1)
            rec["space"] = [{"axis": ax.name, "levels": [lv.name for lv in ax.levels], "default": ax.default,
                             "why": ax.why} for ax in space]
            rec["left_out"] = left
            rec["size"] = len(all_candidates(space))
            measure = bench_measure(run, space, native, model, default_t, gen=tp.gen, live=live, seed=tp.seed, say=say)
            ref = ("reference: defaults", default_candidate(space))
            rec["warm_up"] = warm_up(measure, ref, band, store=log.store, replay=replay)
            rec["reference"] = ("llama.cpp's defaults: measured at the start (the warm-up), in every race where they "
                                "are a candidate, and at the end (the confirmation)")
            if run.plan:
                res = {"winner": default_candidate(space), "label": "defaults", "races": []}
                rec["stop"] = "planned"
            else:
                res = coordinate_search(space, measure, band=band, min_rounds=tp.min_rounds, max_rounds=tp.max_rounds,
                                        sweeps=tp.sweeps, deadline=deadline, store=log.store, replay=replay)
                rec["stop"] = res["stop"]
            rec["races"] = [r.to_dict() for r in res["races"]]
            rec["winner"] = {"label": res["label"], "candidate": list(res["winner"]),
                             "changes": changes(space, res["winner"])}
            # confirmation: the winner against the defaults (and stock), paired, until precise or out of time
            flags, proc, system = knobs_of(space, res["winner"])
            t = int(flags.pop("-t", default_t))
            tuned = proof.config("tuned", native, model, t, [], prompt=[], gen=[tp.gen], reps=1)
            tuned.bench.flags.update(flags)
            tuned.process = ProcessSettings(**{**asdict(ProcessSettings()), **proc})
            tuned.system = system
            confs = [proof.config("defaults", native, model, default_t, [], prompt=[], gen=[tp.gen], reps=1)]
            if stock is not None:
                confs.insert(0, proof.config("stock", stock, model, default_t, [], prompt=[], gen=[tp.gen], reps=1))
            confs.append(tuned)
            left_s = max(60.0, tp.budget_s - (time.monotonic() - t_start))
            confirm = seq_measure(run, "tune_confirm", "The tuned configuration confirmed", confs,
                                  primary=("defaults", "tuned", f"tg{tp.gen}"),
                                  target=run.params.runtime.bench.target_half_width, budget_s=left_s,
                                  min_rounds=3, help_info=inp.help, live=live, baseline="defaults", say=say)
            rec["confirm"] = confirm.to_dict()
        finally:
            live.restore()
            rec["live"] = live.record()
    evidence = {}
    if not rec["planned"]:
        ex = confirm
        test = f"tg{tp.gen}"
        for base in [c.label for c in confs if c.label != "tuned"]:
            evidence[f"tuned vs {base}"] = ex.paired(base, "tuned", test, band=band).as_dict()
    rec["evidence"] = evidence
    prof = profile(space, res["winner"], run_id=run.dir.name, machine=run.params.machine_name(), evidence=evidence,
                   model=Path(model).name, commit=_commit(run))
    rec["profile"] = prof
    if not run.plan:
        import yaml

        path = run.dir / "tuned-profile.yaml"
        run.runner.write_file(path, yaml.safe_dump(prof, sort_keys=False), note="the tuned profile")
        rec["profile_path"] = str(path)
    rec["seconds"] = round(time.monotonic() - t_start, 1)
    return rec


def _commit(run) -> str | None:
    """The project's commit, as the profile's provenance."""
    from ..core.paths import project_root

    r = run.runner.probe(["git", "-C", str(project_root()), "rev-parse", "--short", "HEAD"], check=False, quiet=True)
    return (r.stdout or "").strip() or None


def _race_of(r: dict) -> Race:
    return Race(r["stage"], {k: tuple(v) for k, v in r["labels"].items()}, r["reference"], r["rounds"],
                r["eliminated"], r["stop"], r["winner"], r.get("incumbent", ""), r.get("rules") or {})


def best_so_far(rec: dict) -> list[dict]:
    """After each race: the current best's mean tg and its ratio to the defaults with a 95% CI (for
    the plot). The reference runs only in some races, so the ratio is chained: each race pairs its
    winner with its incumbent (the best before it), and the defaults-to-best ratio is the product of
    those paired ratios (log-ratios add; their variances add, Welch-Satterthwaite degrees of
    freedom). A record made when the reference ran in every race has no incumbents: there the
    ratio is the race's own winner against its reference."""
    from scipy import stats as st

    out = []
    band = rec.get("band", stats.EQUIVALENCE_BAND)
    log_sum, var_sum, df_den = 0.0, 0.0, 0.0
    for i, r in enumerate(rec.get("races") or []):
        race_ = _race_of(r)
        row = {"race": i + 1, "stage": r["stage"], "winner": r["winner"], "mean": race_.mean(r["winner"]),
               "rounds": len(r["rounds"]), "stop": r["stop"]}
        if not race_.incumbent:  # an older record
            pr = race_.paired(r["reference"], r["winner"], band)
            out.append({**row, "ratio": pr.ratio, "ci_low": pr.ci_low, "ci_high": pr.ci_high})
            continue
        if race_.winner != race_.incumbent:
            pr = race_.paired(race_.incumbent, race_.winner, band)
            n = len(pr.log_ratios)
            if n >= 2:
                m = sum(pr.log_ratios) / n
                v = sum((x - m) ** 2 for x in pr.log_ratios) / (n - 1) / n
                log_sum, var_sum, df_den = log_sum + m, var_sum + v, df_den + v * v / (n - 1)
            else:
                log_sum, var_sum = float("nan"), float("nan")
        half = float(st.t.ppf(0.975, var_sum ** 2 / df_den)) * math.sqrt(var_sum) if df_den > 0 else 0.0
        out.append({**row, "ratio": math.exp(log_sum), "ci_low": math.exp(log_sum - half),
                    "ci_high": math.exp(log_sum + half)})
    return out


# ---- the record, for people -------------------------------------------------------------------------------
def _fmt(d: dict | None) -> str:
    if not d or d.get("rounds", 0) < 2 or d.get("ci_low") != d.get("ci_low"):
        return "n/a"
    return f"{d['ratio']:.3f}x [{d['ci_low']:.3f}, {d['ci_high']:.3f}] over {d['rounds']} rounds"


def findings(rec: dict) -> list[str]:
    """Sentences generated from the tune record only."""
    if rec.get("planned"):
        return ["The tune is planned, not run."]
    out = [f"The tuned configuration is `{(rec.get('winner') or {}).get('label', 'defaults')}` "
           f"({(rec.get('winner') or {}).get('changes', 0)} change(s) from llama.cpp's defaults), found in "
           f"{len(rec.get('races') or [])} races over a space of {rec.get('size')} configurations; "
           f"the search stopped because {rec.get('stop')}."]
    for k, v in (rec.get("evidence") or {}).items():
        out.append(f"{k.capitalize()}: {v.get('text', _fmt(v))}.")
    stop = ((rec.get("confirm") or {}).get("extra") or {}).get("stop_sentence")
    if stop:
        out.append(f"The confirmation {stop}.")
    for x in rec.get("left_out") or []:
        out.append(f"Not searched: {x['axis']} ({x['why']}).")
    if rec.get("profile_path"):
        out.append(f"Profile written to {rec['profile_path']}: name it as service.profile to deploy it.")
    return out


class Summary(dict):
    def _repr_markdown_(self) -> str:
        return "\n".join(f"- {f}" for f in findings(self))


def summary(rec: dict) -> Summary:
    return Summary(rec)


def space_table(rec: dict):
    import pandas as pd

    rows = [{"axis": a["axis"], "levels": ", ".join(a["levels"]), "default": a["levels"][a["default"]],
             "searched": "yes", "why": a["why"]} for a in rec.get("space") or []]
    rows += [{"axis": x["axis"], "levels": "", "default": "", "searched": "no", "why": x["why"]}
             for x in rec.get("left_out") or []]
    return pd.DataFrame(rows, columns=["axis", "levels", "default", "searched", "why"])


def races_table(rec: dict):
    import pandas as pd

    rows = []
    for r in rec.get("races") or []:
        rules = r.get("rules") or {}
        rows.append({"race": r["stage"], "candidates": ", ".join(r["labels"]), "rounds": len(r["rounds"]),
                     "eliminated (round)": ", ".join(
                         f"{k} ({v}" + (", clearly worse" if rules.get(k, "").startswith("clearly") else "") + ")"
                         for k, v in r["eliminated"].items()),
                     "stopped because": r["stop"], "winner": r["winner"]})
    return pd.DataFrame(rows, columns=["race", "candidates", "rounds", "eliminated (round)", "stopped because",
                                       "winner"])


def confirm_table(rec: dict):
    import pandas as pd

    ev = rec.get("evidence") or {}
    return pd.DataFrame([{"comparison": k, "ratio": v.get("ratio"), "CI low": v.get("ci_low"),
                          "CI high": v.get("ci_high"), "rounds": v.get("rounds"), "verdict": v.get("verdict")}
                         for k, v in ev.items()],
                        columns=["comparison", "ratio", "CI low", "CI high", "rounds", "verdict"])


def trials_plot(rec: dict):
    """Every measured value in order; the reference drawn in black, race boundaries as lines."""
    from .report import Note, _close, _plt

    races = rec.get("races") or []
    if not races:
        return Note("*trials: planned, not run*")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    x = 0
    for r in races:
        ax.axvline(x - 0.5, color="0.85", lw=0.8)
        for rnd in r["rounds"]:
            for lab, v in rnd.items():
                is_ref = lab == r["reference"]
                ax.plot([x], [v], "s" if is_ref else "o", color="k" if is_ref else
                        ("tab:green" if lab == r["winner"] else "tab:gray"), ms=4)
                x += 1
    ax.set_xlabel("invocation (in order; vertical lines start a race; green: the race's winner, black: reference)")
    ax.set_ylabel("tg t/s")
    ax.set_title("Trials over time", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _close(fig)


# ---- is the search worth its time? (bench/tune_vs_exhaustive.py) -------------------------------------------
def versus_exhaustive(run, inp, axes: Sequence[str], *, rounds: int = 4, seeds: Sequence[int] = (0, 1, 2),
                      check_rounds: int = 5, say=print) -> dict:
    """Measure every configuration of a small space in ``rounds`` interleaved rounds (the exhaustive
    optimum), run the tuner with each seed on the same space, then race each seed's choice against
    the optimum in paired rounds: the ratio with its CI, and the share of the exhaustive time used."""
    from . import proof
    from ..runtime.cpus import cpu_plan
    from ..settings.live import LiveState

    tp = run.params.runtime.tune
    band = run.params.runtime.bench.equivalence_band
    _stock, native, _v3, _ = proof.sides(run, inp)
    mm = inp.memory_model or inp.model
    model = str(mm["path"])
    default_t = cpu_plan(run, "bench", help_info=inp.help).bench_default or inp.nproc
    out: dict[str, Any] = {"axes": list(axes), "model": Path(model).name, "rounds": rounds, "seeds": list(seeds)}
    with LiveState(run) as live:
        space, left = space_for(run, axes, nproc=inp.nproc, default_threads=default_t,
                                help_flags=set((inp.help or {}).get("flags") or []), unavailable=live.unavailable)
        cands = {label_of(space, c): c for c in all_candidates(space)}
        out.update(space=[ax.name for ax in space], left_out=left, size=len(cands))
        counter = {"n": 0}

        def counted(m):
            def f(todo, r):
                counter["n"] += len(todo)
                return m(todo, r)
            return f

        # the exhaustive sweep: every configuration once per round
        m = counted(bench_measure(run, space, native, model, default_t, gen=tp.gen, live=live, seed=100, say=None))
        t0 = time.monotonic()
        ex_rounds = [m(list(cands.items()), r) for r in range(rounds)]
        ex_s, ex_n = time.monotonic() - t0, counter["n"]
        means = {lab: sum(r[lab] for r in ex_rounds) / rounds for lab in cands}
        optimum = max(means, key=means.get)
        out["exhaustive"] = {"seconds": round(ex_s, 1), "invocations": ex_n, "optimum": optimum,
                             "optimum_mean": means[optimum], "means": means}
        if say:
            say(f"exhaustive: {len(cands)} configurations x {rounds} rounds = {ex_n} invocations in {ex_s:.0f} s; "
                f"optimum {optimum} ({means[optimum]:.2f} t/s)")
        out["tuner"] = []
        for seed in seeds:
            counter["n"] = 0
            m = counted(bench_measure(run, space, native, model, default_t, gen=tp.gen, live=live, seed=seed, say=None))
            # everything the tuner measures is counted and timed: the warm-up (the reference's first
            # measurement), every race and the confirmation against the reference
            t0 = time.monotonic()
            res = search(space, m, band=band, min_rounds=tp.min_rounds, max_rounds=tp.max_rounds, sweeps=tp.sweeps)
            t_s, t_n = time.monotonic() - t0, counter["n"]
            choice = res["label"]
            if choice == optimum:
                ratio = {"ratio": 1.0, "ci_low": 1.0, "ci_high": 1.0, "rounds": 0, "text": "the same configuration"}
            else:
                mr = bench_measure(run, space, native, model, default_t, gen=tp.gen, live=live, seed=1000 + seed,
                                   say=None)
                pair = [(optimum, cands[optimum]), (choice, cands[choice])]
                rs = [mr(pair, r) for r in range(check_rounds)]
                pr = stats.paired_ratio([r[optimum] for r in rs], [r[choice] for r in rs], optimum, choice, band=band)
                ratio = pr.as_dict()
            row = {"seed": seed, "choice": choice, "ratio_to_optimum": ratio, "seconds": round(t_s, 1),
                   "invocations": t_n, "time_share": t_s / ex_s if ex_s else None,
                   "invocation_share": t_n / ex_n if ex_n else None,
                   "counted": "warm-up, races and confirmation (every invocation the tuner made)",
                   "warm_up": len(res["warm_up"]), "confirmed_by": res["confirmed_by"], "drift": res["drift"],
                   "races": [{"stage": r.stage, "rounds": len(r.rounds), "stop": r.stop, "winner": r.winner,
                              "eliminated": r.eliminated, "rules": r.rules} for r in res["races"]]}
            out["tuner"].append(row)
            if say:
                say(versus_line(row))
    out["live"] = live.record()
    return out


def versus_line(row: dict) -> str:
    r = row["ratio_to_optimum"]
    ci = "same configuration as the optimum" if r.get("text") == "the same configuration" else \
        f"{r['ratio']:.3f}x of the optimum [{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({r['rounds']} paired rounds)"
    return (f"seed {row['seed']}: chose `{row['choice']}`: {ci}; {row['invocations']} invocations "
            f"(warm-up, races and confirmation), {row['time_share']:.0%} of the exhaustive sweep's time")
