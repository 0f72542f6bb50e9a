"""The instruction-tuning mixture, built as FLAN and Flan 2022 build theirs, in plain Python (no seqio, no TFDS).

    tasks (sources.py) --hold out clusters--> --reserve CoT items for eval--> --cap each task at K records-->
    --draw `size` records examples-proportionally--> per record: a format (zero-shot, few-shot, CoT) and a
    template --> prompt/response JSONL with provenance (_task, _template, _format, _cluster, _inverted, _shots)

- FLAN: about ten templates per dataset, some inverted; examples-proportional mixing with a per-dataset cap; a
  whole task cluster held out of training so that it can be scored zero-shot.
- Flan 2022: each example's format drawn at random: zero-shot, few-shot (k exemplars of the same task and
  template before it) or chain of thought (the rationale, then the answer) where the task has rationales.

The format is drawn per record among the formats its task allows, with the given weights renormalised over them
(a T0 record cannot be CoT: T0 has no rationales), so on tasks that allow all three the formats appear in the
stated proportions. A few-shot prompt longer than `max_prompt_chars` loses exemplars until it fits, and is
recorded as zero-shot if none fits; a T0 record whose prompt alone is longer is left out (mixture.json counts
them per task under too_long).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from slmkit.errors import SlmError
from slmkit.instruct.sources import KNOWN_CLUSTERS, SOURCES, Task, read_sources
from slmkit.instruct.templates import Template, builtin_templates

FORMATS = ("zero", "few", "cot")


@dataclass
class MixtureSpec:
    sources: tuple[str, ...] = SOURCES
    hold_out: tuple[str, ...] = ()
    cap: int = 3000  # records per task at most (FLAN's examples-proportional mixing limit)
    size: int | None = None  # records in the mixture, drawn in proportion to the capped task sizes (None: all)
    formats: dict[str, float] = field(default_factory=lambda: {"zero": 0.5, "few": 0.3, "cot": 0.2})
    shots: int = 3  # exemplars in a few-shot prompt
    templates: str = "all"  # "all", or "one": a single template per task (the ablation)
    reserve: int = 0  # the last N records of each CoT task are kept out, for evaluation (reserved.jsonl)
    max_prompt_chars: int = 6000
    seed: int = 0

    def check(self) -> None:
        if self.cap < 1:
            raise SlmError(f"--cap must be at least 1 (records per task), got {self.cap}")
        if self.size is not None and self.size < 1:
            raise SlmError(f"--size must be at least 1, got {self.size}")
        if self.shots < 1:
            raise SlmError(f"--shots must be at least 1, got {self.shots}")
        if self.reserve < 0:
            raise SlmError(f"--reserve must be 0 or more, got {self.reserve}")
        if self.templates not in ("all", "one"):
            raise SlmError(f"--templates must be 'all' or 'one', got {self.templates!r}")
        bad = [k for k in self.formats if k not in FORMATS]
        if bad:
            raise SlmError(f"unknown format {bad[0]!r}; formats: {', '.join(FORMATS)} (e.g. zero=0.5,few=0.3,cot=0.2)")
        if any(w < 0 for w in self.formats.values()) or sum(self.formats.values()) <= 0:
            raise SlmError("format weights must be 0 or more and not all 0, e.g. zero=0.5,few=0.3,cot=0.2")
        unknown = [c for c in self.hold_out if c not in KNOWN_CLUSTERS]
        if unknown:
            raise SlmError(f"--hold-out {unknown[0]!r}: not a task cluster; clusters: {', '.join(KNOWN_CLUSTERS)}")


def parse_formats(text: str) -> dict[str, float]:
    """"zero=0.5,few=0.3,cot=0.2" (or "zero" alone) -> weights."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise SlmError(f"--formats {text!r}: {weight!r} is not a number (e.g. zero=0.5,few=0.3,cot=0.2)") from None
    if not out:
        raise SlmError("--formats is empty; e.g. zero=0.5,few=0.3,cot=0.2")
    return out


@dataclass
class Mixture:
    records: list[dict]
    reserved: list[dict]
    stats: dict


def build(root: Path, spec: MixtureSpec, user_templates: dict[str, list[Template]] | None = None,
          tasks: list[Task] | None = None) -> Mixture:
    """The mixture's records from the sources under `root` (or the given tasks), by the spec."""
    spec.check()
    tasks = read_sources(root, spec.sources) if tasks is None else tasks
    templates = {t.name: _task_templates(t, user_templates or {}) for t in tasks}
    unused = sorted(set(user_templates or {}) - {t.name for t in tasks})
    if unused:
        raise SlmError(f"templates given for {unused[0]!r}, which is not a task of the sources; tasks: "
                       f"{', '.join(t.name for t in tasks)}")

    present = Counter(t.cluster for t in tasks)
    for c in spec.hold_out:
        if not present[c]:
            raise SlmError(f"--hold-out {c}: no task of the sources {', '.join(spec.sources)} is in cluster {c!r}; "
                           f"clusters with tasks: {', '.join(sorted(present))}")
    held = [t.name for t in tasks if t.cluster in spec.hold_out]
    kept = [t for t in tasks if t.cluster not in spec.hold_out]
    if not kept:
        raise SlmError(f"holding out {', '.join(spec.hold_out)} leaves no task to train on")

    rng = random.Random(spec.seed)
    pools: dict[str, list[dict]] = {}
    reserved: list[dict] = []
    too_long: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for t in kept:
        recs = list(t.records)
        if spec.reserve and t.rationale:
            if spec.reserve >= len(recs):
                raise SlmError(f"--reserve {spec.reserve} takes every record of {t.name} ({len(recs)})")
            reserved += [{"_task": t.name, "_cluster": t.cluster, **r} for r in recs[-spec.reserve:]]
            recs = recs[:-spec.reserve]
        if t.fixed_templates:  # FLAN truncated long inputs; a prompt cut short is not the task, so it is left out
            n = len(recs)
            recs = [r for r in recs if len(r["prompt"]) <= spec.max_prompt_chars]
            too_long[t.name] = n - len(recs)
        sizes[t.name] = len(recs)
        if t.fixed_templates and spec.templates == "one":
            first = t.meta["templates"][0]
            recs = [r for r in recs if r["_template"] == first] or recs[:1]
        pools[t.name] = recs
    # The quotas come from the all-template pools either way, so --templates one changes the templates and not
    # the mixture's make-up; a T0 task's one template holds fewer examples, which are then repeated.
    capped = {name: min(n, spec.cap) for name, n in sizes.items()}
    total = sum(capped.values())
    quota = capped if spec.size is None else _proportional(capped, spec.size, total)

    records: list[dict] = []
    by_name = {t.name: t for t in kept}
    for name, n in quota.items():
        t, pool = by_name[name], pools[name]
        groups: dict[str, list[int]] = {}
        if t.fixed_templates:
            for j, r in enumerate(pool):
                groups.setdefault(r["_template"], []).append(j)
        order: list[int] = []
        while True:  # a pass over the shuffled pool, more if the quota is larger (--templates one)
            shuffled = list(range(len(pool)))
            rng.shuffle(shuffled)
            order += shuffled
            if len(order) >= n or not pool:
                break
        for i in order[:n]:
            records.append(_render(t, pool, i, templates[name], spec, rng, groups))
    rng.shuffle(records)
    stats = _stats(records, reserved, spec, held, capped, quota)
    stats["too_long"] = {k: v for k, v in too_long.items() if v}
    return Mixture(records, reserved, stats)


def _task_templates(t: Task, user: dict[str, list[Template]]) -> list[Template]:
    if t.fixed_templates:
        if t.name in user:
            raise SlmError(f"{t.name}: its records are already templated (P3's templates); templates can be given "
                           f"for the field tasks only")
        return []
    tmpls = user.get(t.name) or builtin_templates(t.name, t.source)
    if not tmpls:
        raise SlmError(f"{t.name}: no templates; give some with --templates-file")
    fields = set(t.fields)
    for tm in tmpls:
        missing = sorted(tm.fields() - fields)
        if missing:
            raise SlmError(f"template {tm.name!r} of {t.name} names {{{missing[0]}}}, which its records do not "
                           f"have; fields: {', '.join(t.fields)}")
        if tm.cot and not t.rationale:
            raise SlmError(f"template {tm.name!r} of {t.name} is a CoT template, but {t.name} has no rationales")
    if not any(not tm.cot for tm in tmpls):
        raise SlmError(f"{t.name}: needs at least one template that is not CoT (for zero- and few-shot)")
    return tmpls


def _proportional(capped: dict[str, int], size: int, total: int) -> dict[str, int]:
    """Examples-proportional quotas summing to size (largest remainders), each at most the task's capped size."""
    if size > total:
        raise SlmError(f"--size {size:,} is more than the {total:,} records the capped tasks hold; lower --size or "
                       f"raise --cap")
    exact = {k: size * v / total for k, v in capped.items()}
    quota = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - quota[k], reverse=True)[:size - sum(quota.values())]:
        quota[k] += 1
    return quota


def _render(t: Task, pool: list[dict], i: int, tmpls: list[Template], spec: MixtureSpec,
            rng: random.Random, groups: dict[str, list[int]]) -> dict:
    """Record i of the task's pool as a prompt/response pair in a drawn format; few-shot exemplars come from the
    same task and template (groups: a T0 task's record indices by template)."""
    rec = pool[i]
    allowed = {"zero": True, "few": len(pool) > spec.shots, "cot": any(tm.cot for tm in tmpls)}
    names = [f for f in FORMATS if allowed[f] and spec.formats.get(f, 0) > 0] or ["zero"]
    fmt = rng.choices(names, weights=[spec.formats.get(f, 0) for f in names])[0] if len(names) > 1 else names[0]
    if t.fixed_templates:
        template, inverted = rec["_template"], rec["_inverted"]
        prompt, response = rec["prompt"], rec["completion"]
        same = groups[template]

        def exemplar(j: int) -> str:
            return pool[j]["prompt"] + pool[j]["completion"]
    else:
        choice = [tm for tm in tmpls if tm.cot == (fmt == "cot")]
        tm = choice[0] if spec.templates == "one" else rng.choice(choice)
        template, inverted = tm.name, tm.inverted
        prompt, response = tm.apply(rec)
        same = range(len(pool))

        def exemplar(j: int) -> str:
            p, r = tm.apply(pool[j])
            return p + r
    shots = 0
    if fmt == "few":
        picks = [j for j in rng.sample(same, min(spec.shots + 1, len(same))) if j != i][:spec.shots]
        parts = [exemplar(j) for j in picks]
        while parts and sum(map(len, parts)) + len(prompt) + 2 * len(parts) > spec.max_prompt_chars:
            parts.pop()
        if parts:
            prompt, shots = "\n\n".join(parts) + "\n\n" + prompt, len(parts)
        else:
            fmt = "zero"
    return {"prompt": prompt, "response": response, "_task": t.name, "_template": template, "_format": fmt,
            "_cluster": t.cluster, "_inverted": inverted, "_shots": shots}


def _stats(records: list[dict], reserved: list[dict], spec: MixtureSpec, held: list[str],
           capped: dict[str, int], quota: dict[str, int]) -> dict:
    n = len(records)
    fmts = Counter(r["_format"] for r in records)
    return {"spec": {**asdict(spec), "sources": list(spec.sources), "hold_out": list(spec.hold_out)},
            "records": n, "reserved": len(reserved), "held_out_tasks": held,
            "formats": {f: fmts[f] for f in FORMATS},
            "clusters": dict(sorted(Counter(r["_cluster"] for r in records).items())),
            "tasks": {k: {"capped": capped[k], "drawn": quota[k]} for k in sorted(quota)},
            "templates": len({(r["_task"], r["_template"]) for r in records}),
            "inverted": sum(bool(r["_inverted"]) for r in records),
            "prompt_chars": sum(len(r["prompt"]) for r in records),
            "response_chars": sum(len(r["response"]) for r in records)}


def write(mix: Mixture, out: str | Path, overwrite: bool = False) -> Path:
    """OUT/train.jsonl, OUT/reserved.jsonl and OUT/mixture.json, written as one atomic folder."""
    from slmkit.outputs import atomic_dir

    with atomic_dir(out, "mixture", overwrite) as tmp:
        for name, rows in (("train.jsonl", mix.records), ("reserved.jsonl", mix.reserved)):
            with open(tmp / name, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "mixture.json").write_text(json.dumps(mix.stats, indent=2), encoding="utf-8")
    return Path(out)
