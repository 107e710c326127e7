"""`semtok resources`: every rule's measured time and peak memory against what the
workflow profile asks for it. Ours, not a table of the paper.

Snakemake's `benchmark:` directive writes one TSV a job (`benchmarks/<job>.tsv`, `paths.benchmark_file`)
with the columns s (wall seconds), h:m:s, max_rss, max_vms, max_uss, max_pss (MB), io_in, io_out,
mean_load, cpu_time and one row a run (`--benchmark-repeats`); `NA` where a job ended before its
first sample. Which rule a file belongs to comes from the rules' benchmark file patterns
(`stage1_{tok}.tsv`), given by the workflow. The workflow profile's `set-resources`
(workflow/profiles/default/config.yaml) gives each rule's `runtime` (minutes) and `mem_mb`.

One row a rule: its jobs, the longest wall time and the largest peak RSS over them, the request, the
share of the request used, and a flag: `over` where a job used more than the rule asks (Slurm would
kill it), `far under` where every job used less than `FAR_UNDER` of it (the request blocks resources
the job never uses, and a long `runtime` delays scheduling).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

RESOURCES = "resources"
RESOURCES_CAPTION = (
    "Resources: every rule's longest job and largest peak memory (Snakemake's benchmark records) "
    "against the runtime and memory the workflow profile asks for it."
)
FORMATS = ("csv", "md")
FAR_UNDER = 0.25  # used below this share of the request: flagged `far under`
OVER, UNDER = "over", "far under"
COLUMNS = ("s", "max_rss")  # the benchmark columns the table reads


class ResourcesError(ValueError):
    """A benchmark file or the profile breaks its format; the message names the file and the key."""


@dataclass(frozen=True)
class Request:
    """What the profile asks for a rule: runtime in minutes, memory in MB (None: not set)."""

    runtime: float | None = None
    mem_mb: float | None = None


@dataclass(frozen=True)
class Usage:
    """A rule's jobs: how many, the longest wall time (s) and the largest peak RSS (MB; None: never
    sampled)."""

    jobs: int
    seconds: float
    max_rss: float | None


# ----------------------------------------------------------------------------------------------
# Reading


def read_benchmark(path: Path) -> list[tuple[float, float | None]]:
    """(wall seconds, peak RSS in MB or None) of every run recorded in one benchmark TSV."""
    try:
        frame = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ResourcesError(f"{path}: not a Snakemake benchmark TSV ({err})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing or frame.empty:
        raise ResourcesError(
            f"{path}: not a Snakemake benchmark TSV (columns {list(frame.columns)}, {len(frame)} rows; "
            f"expected at least {list(COLUMNS)} and one row)"
        )
    runs = []
    for s, rss in zip(frame["s"], frame["max_rss"], strict=True):
        if not (isinstance(s, (int, float)) and math.isfinite(s)):
            raise ResourcesError(f"{path}: wall time {s!r} is not a number")
        runs.append((float(s), None if pd.isna(rss) else float(rss)))
    return runs


def _number(value: Any, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ResourcesError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def read_profile(path: Path) -> dict[str, Request]:
    """Each rule's `runtime` (minutes) and `mem_mb` under the profile's `set-resources`."""
    try:
        profile = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ResourcesError(f"{path}: not YAML ({err})") from None
    rules = profile.get("set-resources", {}) if isinstance(profile, dict) else None
    if not isinstance(rules, dict):
        raise ResourcesError(f"{path}: set-resources: expected a mapping of rule to resources")
    out = {}
    for rule, res in rules.items():
        if not isinstance(res, dict):
            raise ResourcesError(f"{path}: set-resources.{rule}: expected a mapping of resources")
        found = {
            k: _number(res[k], f"{path}: set-resources.{rule}.{k}") for k in ("runtime", "mem_mb") if k in res
        }
        out[str(rule)] = Request(**found)
    return out


def _split_pattern(pattern: str) -> list[tuple[str, str | None]]:
    """A Snakemake file pattern as (literal, None) and (wildcard name, its regex or None) parts; a
    wildcard's constraint may hold braces itself (`{shard,\\d{5}}`)."""
    parts: list[tuple[str, str | None]] = []
    literal, i = "", 0
    while i < len(pattern):
        if pattern[i] != "{":
            literal += pattern[i]
            i += 1
            continue
        depth, j = 1, i + 1
        while j < len(pattern) and depth:
            depth += {"{": 1, "}": -1}.get(pattern[j], 0)
            j += 1
        if depth:
            raise ResourcesError(f"benchmark pattern {pattern!r}: unbalanced braces")
        name, _, constraint = pattern[i + 1 : j - 1].partition(",")
        parts += [(literal, None), (name.strip(), constraint.strip() or ".+")]
        literal, i = "", j
    return [*parts, (literal, None)]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The file names a benchmark pattern matches: `stage1_{tok}.tsv` → `stage1_(.+)\\.tsv`, a
    constrained wildcard `{shard,\\d{5}}` → `(\\d{5})`."""
    return re.compile("".join(re.escape(t) if rx is None else f"({rx})" for t, rx in _split_pattern(pattern)))


def rule_of(name: str, patterns: dict[str, str]) -> str | None:
    """The rule whose benchmark pattern (a file name with wildcards) matches file `name`; the most
    specific (most literal characters) when several do; None when none does."""
    matches = [
        (sum(len(t) for t, rx in _split_pattern(pattern) if rx is None), rule)
        for rule, pattern in patterns.items()
        if pattern_regex(pattern).fullmatch(name)
    ]
    if not matches:
        return None
    matches.sort(reverse=True)
    if len(matches) > 1 and matches[0][0] == matches[1][0]:
        tied = sorted(rule for n, rule in matches if n == matches[0][0])
        raise ResourcesError(f"benchmark file {name} matches the patterns of rules {tied} equally")
    return matches[0][1]


def usage(benchmarks: Path, patterns: dict[str, str]) -> tuple[dict[str, Usage], list[str]]:
    """Each rule's `Usage` from the TSVs in folder `benchmarks`, and the files no pattern matches."""
    runs: dict[str, list[tuple[float, float | None]]] = {}
    jobs: dict[str, int] = {}
    unmatched = []
    for path in sorted(benchmarks.glob("*.tsv")):
        rule = rule_of(path.name, patterns)
        if rule is None:
            unmatched.append(path.name)
            continue
        runs.setdefault(rule, []).extend(read_benchmark(path))
        jobs[rule] = jobs.get(rule, 0) + 1
    out = {}
    for rule, rows in runs.items():
        rss = [r for _, r in rows if r is not None]
        out[rule] = Usage(jobs[rule], max(s for s, _ in rows), max(rss) if rss else None)
    return out, unmatched


# ----------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Line:
    rule: str
    used: Usage
    asked: Request

    def share(self, resource: str) -> float | None:
        """Used / asked for "runtime" or "mem_mb" (None where either is unknown)."""
        used = self.used.seconds / 60 if resource == "runtime" else self.used.max_rss
        asked = getattr(self.asked, resource)
        return None if used is None or asked is None else used / asked

    def flag(self, resource: str) -> str:
        share = self.share(resource)
        if share is None:
            return ""
        return OVER if share > 1 else UNDER if share < FAR_UNDER else ""


def lines(used: dict[str, Usage], asked: dict[str, Request]) -> list[Line]:
    """One line per measured rule, in the profile's order, then the rules it does not list."""
    order = [r for r in asked if r in used] + sorted(r for r in used if r not in asked)
    return [Line(rule, used[rule], asked.get(rule, Request())) for rule in order]


def clock(seconds: float) -> str:
    """4.2 → "0:00:04", 93784 → "1 d 2:03:04"."""
    days, rest = divmod(round(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days} d {h}:{m:02d}:{s:02d}" if days else f"{h}:{m:02d}:{s:02d}"


def memory(mb: float | None) -> str:
    if mb is None:
        return "–"
    return f"{mb / 1000:.1f} GB" if mb >= 1000 else f"{mb:.0f} MB"


def _share(line: Line, resource: str) -> str:
    share = line.share(resource)
    if share is None:
        return "–"
    flag = line.flag(resource)
    return f"{share:.0%}" + (f" ({flag})" if flag else "")


def to_frame(table: list[Line]) -> pd.DataFrame:
    return pd.DataFrame.from_records(
        [
            {
                "rule": line.rule,
                "jobs": line.used.jobs,
                "max_s": line.used.seconds,
                "max_rss_mb": line.used.max_rss,
                "runtime_min": line.asked.runtime,
                "mem_mb": line.asked.mem_mb,
                "runtime_share": line.share("runtime"),
                "mem_share": line.share("mem_mb"),
                "flags": " ".join(
                    f"{res}:{line.flag(res)}".replace(" ", "-")
                    for res in ("runtime", "mem_mb")
                    if line.flag(res)
                ),
            }
            for line in table
        ],
        columns=[
            "rule",
            "jobs",
            "max_s",
            "max_rss_mb",
            "runtime_min",
            "mem_mb",
            "runtime_share",
            "mem_share",
            "flags",
        ],
    )


def notes(table: list[Line], unmatched: list[str], profile: Path, forkserver: bool) -> list[str]:
    out = [
        f"Time: the longest job's wall time; memory: the largest peak resident memory (max_rss) of any "
        f"job's processes, as Snakemake's benchmark records them. Asked: `runtime` and `mem_mb` of "
        f"`set-resources` in {profile}. {OVER} = a job used more than the rule asks; {UNDER} = every job "
        f"used less than {FAR_UNDER:.0%} of it.",
        "Memory is host memory on the node that runs the job's Snakemake process: GPU memory and the "
        "processes of a multi-node job's other nodes are not in it (mem_mb is asked per node).",
        "The profile is sized for config/paper.yaml on GPU nodes: a run of the tiny default uses a "
        "small share of every request, so its flags say nothing about the paper run.",
    ]
    if forkserver:
        out.append(
            "compute.forkserver is on: jobs of a local run were forked from the fork server, outside the "
            "process tree the benchmark watches, so their max_rss is the small client process's, not the "
            "job's (wall time is right). Measure memory with compute.forkserver=false or on Slurm."
        )
    missing = [line.rule for line in table if line.asked == Request()]
    if missing:
        out.append(f"Not in the profile (Snakemake's default resources): {', '.join(missing)}.")
    if unmatched:
        out.append(f"Benchmark files of no current rule (not counted): {', '.join(unmatched)}.")
    return out


def to_markdown(table: list[Line], notes_: list[str]) -> str:
    head = [
        "Rule",
        "Jobs",
        "Time (longest)",
        "Runtime asked",
        "Time used",
        "Peak memory",
        "mem_mb asked",
        "Memory used",
    ]
    rows = [
        [
            line.rule,
            str(line.used.jobs),
            clock(line.used.seconds),
            "–" if line.asked.runtime is None else clock(line.asked.runtime * 60),
            _share(line, "runtime"),
            memory(line.used.max_rss),
            memory(line.asked.mem_mb),
            _share(line, "mem_mb"),
        ]
        for line in table
    ]
    out = [f"**{RESOURCES_CAPTION}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    out += ["", "Notes:", *(f"- {n}" for n in notes_)]
    return "\n".join(out) + "\n"


def write(
    benchmarks: Path, profile: Path, patterns: dict[str, str], outputs: dict[str, Path], forkserver: bool
) -> dict[str, Any]:
    """Build the table from the benchmark TSVs in `benchmarks`, the profile and the rules' benchmark
    file patterns ({rule: "stage1_{tok}.tsv"}); outputs {"csv"|"md": path}. Without records (no
    `benchmark:` directive ran) the table is empty and its notes say so."""
    used, unmatched = usage(benchmarks, patterns)
    table = lines(used, read_profile(profile))
    comments = notes(table, unmatched, profile, forkserver)
    if not table:
        comments.insert(0, f"No benchmark records of any rule under {benchmarks}.")
    texts = {"csv": to_frame(table).to_csv(index=False), "md": to_markdown(table, comments)}
    for ext, path in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[ext])
    return {"table": RESOURCES, "rules": len(table), "outputs": [str(p) for p in outputs.values()]}
