"""The Study spec as typed models, and the checks the CRD schema cannot express.

The CRD (schema + CEL) rejects most bad input at `kubectl apply`. What it cannot
check (references between fields, template placeholders) is checked here, and a
failure becomes the Study's `Invalid` condition with a message naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

Choice = str | bool | int | float
PLACEHOLDER = re.compile(r"\$\{([a-zA-Z]+)\.([A-Za-z_][A-Za-z0-9_]*)\}")
TRIAL_FIELDS = {"name", "number", "seed"}
STUDY_FIELDS = {"name", "namespace"}


class SpecError(ValueError):
    """An invalid Study spec; the message names the field and says what to change."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Objective(_Model):
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


class FloatRange(_Model):
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("low must be positive when log is true")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError("step must be positive and cannot be combined with log")
        return self


class IntRange(_Model):
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("low must be positive when log is true")
        if self.step < 1 or (self.log and self.step != 1):
            raise ValueError("step must be >= 1, and 1 when log is true")
        return self


class Categorical(_Model):
    choices: Annotated[list[Choice], Field(min_length=1)]

    @model_validator(mode="after")
    def _check(self) -> Categorical:
        if len({(type(c), c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices must be distinct")
        return self


class When(_Model):
    parameter: str
    in_: Annotated[list[Choice], Field(alias="in", min_length=1)]


class Parameter(_Model):
    name: str
    float: FloatRange | None = None
    int: IntRange | None = None
    categorical: Categorical | None = None
    when: When | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Parameter:
        kinds = [k for k in ("float", "int", "categorical") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("needs exactly one of float, int or categorical")
        return self


class StartupSampler(_Model):
    """Explore first: the first `trials` trials come from this sampler."""

    name: Literal["random", "qmc", "grid"] = "qmc"
    trials: Annotated[int, Field(ge=1)] = 10
    options: dict[str, Any] = Field(default_factory=dict)


class Sampler(_Model):
    name: Literal["tpe", "gp", "cmaes", "random", "grid", "qmc", "nsga2"] = "tpe"
    seed: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    startup: StartupSampler | None = None


PrunerName = Literal[
    "none", "median", "percentile", "successive-halving", "hyperband", "patient", "threshold"
]


class Pruner(_Model):
    name: PrunerName = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class RepeatBest(_Model):
    """Re-run the best parameters with other seeds before trusting them."""

    count: Annotated[int, Field(ge=1, le=100)]


class WarmStart(_Model):
    from_study: Annotated[str, Field(min_length=1)]


DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """'1h30m' -> 5400.0 seconds (the Go duration units Kubernetes users know)."""
    if not re.fullmatch(r"(\d+(?:\.\d+)?(ms|s|m|h))+", text):
        raise ValueError(f"{text!r} is not a duration like 90m, 6h or 1h30m")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in DURATION.findall(text))


class Budget(_Model):
    max_trials: Annotated[int, Field(ge=1)]
    parallelism: Annotated[int, Field(ge=1)] = 1
    max_failed_trials: Annotated[int, Field(ge=0)] | None = None
    gpu_hours: Annotated[float, Field(gt=0)] | None = None
    timeout: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if self.parallelism > self.max_trials:
            raise ValueError("parallelism must not exceed maxTrials")
        if self.timeout is not None:
            parse_duration(self.timeout)
        return self

    @property
    def timeout_seconds(self) -> float | None:
        return parse_duration(self.timeout) if self.timeout else None


class StudySpec(_Model):
    # The API's other fields are added by later features; unknown ones are kept, not rejected,
    # so an older operator does not refuse a newer Study outright.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    objective: Objective | None = None
    objectives: list[Objective] | None = None
    parameters: Annotated[list[Parameter], Field(min_length=1)]
    sampler: Sampler = Field(default_factory=Sampler)
    pruner: Pruner = Field(default_factory=Pruner)
    budget: Budget
    trial_template: dict[str, Any]
    repeat_best: RepeatBest | None = None
    warm_start: WarmStart | None = None
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    queue_name: str | None = None  # a Kueue LocalQueue: trial Jobs wait for its admission

    @property
    def all_objectives(self) -> list[Objective]:
        if self.objectives:
            return list(self.objectives)
        assert self.objective is not None
        return [self.objective]

    @property
    def primary(self) -> Objective:
        return self.all_objectives[0]

    def parameter(self, name: str) -> Parameter:
        return next(p for p in self.parameters if p.name == name)


def _loc(loc: tuple[str | int, ...]) -> str:
    out = "spec"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "int", "str", "bool") and re.search(r"\.(choices|in)\[\d+\]$", out):
            continue  # pydantic's label for a branch of the Choice union: noise for a user
        else:
            out += f".{to_camel(part) if '_' in part else part}"
    return out


def parse(spec: dict[str, Any]) -> StudySpec:
    """Parse and check a Study's spec; raise SpecError naming every bad field."""
    try:
        model = StudySpec.model_validate(spec)
    except ValidationError as e:
        problems = [
            f"{_loc(err['loc'])}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors()
        ]
        raise SpecError("; ".join(problems)) from None
    _check_cross_references(model)
    return model


def _check_cross_references(spec: StudySpec) -> None:
    if (spec.objective is None) == (not spec.objectives):
        raise SpecError("spec: set exactly one of objective or objectives")
    metrics = [o.metric for o in spec.all_objectives]
    if len(set(metrics)) != len(metrics):
        raise SpecError("spec.objectives: each metric may appear once")
    seen: dict[str, Parameter] = {}
    for i, p in enumerate(spec.parameters):
        if p.name in seen:
            raise SpecError(f"spec.parameters[{i}].name: {p.name!r} is listed twice")
        if p.when is not None:
            parent = seen.get(p.when.parameter)
            if parent is None:
                raise SpecError(
                    f"spec.parameters[{i}].when.parameter: {p.when.parameter!r} must name a "
                    "parameter listed before this one"
                )
            if parent.categorical is not None:
                bad = [v for v in p.when.in_ if v not in parent.categorical.choices]
                if bad:
                    raise SpecError(
                        f"spec.parameters[{i}].when.in: {bad} are not choices of {parent.name!r}"
                    )
        seen[p.name] = p
    multi = len(spec.all_objectives) > 1
    if multi and spec.sampler.name == "cmaes":
        raise SpecError("spec.sampler.name: cmaes supports one objective only")
    if multi and spec.pruner.name != "none":
        raise SpecError("spec.pruner: pruning needs a single objective")
    if multi and spec.repeat_best is not None:
        raise SpecError("spec.repeatBest: a multi-objective Study has no single best trial")
    if len(spec.enqueue) > spec.budget.max_trials:
        raise SpecError("spec.enqueue: more configurations than budget.maxTrials")
    for i, params in enumerate(spec.enqueue):
        problems = check_values(spec.parameters, params)
        if problems:
            raise SpecError(f"spec.enqueue[{i}]: {'; '.join(problems)}")
    _check_template(spec)


TEMPLATE_KINDS = ("Job", "JobSet")


@dataclass(frozen=True)
class PodTemplate:
    """One kind of pod a trial runs: where it sits in the trialTemplate, and how many."""

    path: str  # e.g. spec.trialTemplate.spec.replicatedJobs[0].template.spec.template
    template: dict[str, Any]
    pods: int


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 1


def job_specs(tpl: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    """The trial's batch/v1 JobSpecs (the template itself, or each replicated Job's), each
    with its path in the Study and how many copies of it run."""
    if (tpl.get("kind") or "Job") == "Job":
        return [("spec.trialTemplate", tpl, 1)]
    jobs = (tpl.get("spec") or {}).get("replicatedJobs")
    return [
        (
            f"spec.trialTemplate.spec.replicatedJobs[{i}].template.spec",
            rj["template"]["spec"],
            _count(rj.get("replicas")),
        )
        for i, rj in enumerate(jobs if isinstance(jobs, list) else [])
        if isinstance(rj, dict) and isinstance((rj.get("template") or {}).get("spec"), dict)
    ]


def pod_templates(tpl: dict[str, Any]) -> list[PodTemplate]:
    """Each pod template of the trial, with how many pods it runs at once (a Job trial
    runs one pod at a time)."""
    single = (tpl.get("kind") or "Job") == "Job"
    return [
        PodTemplate(
            f"{path}.template",
            job.get("template") or {},
            1 if single else copies * _count(job.get("parallelism")),
        )
        for path, job, copies in job_specs(tpl)
    ]


def _check_template(spec: StudySpec) -> None:
    tpl = spec.trial_template
    kind = tpl.get("kind") or "Job"
    if kind not in TEMPLATE_KINDS:
        raise SpecError(
            f"spec.trialTemplate.kind: {kind!r} is not a kind kubetune runs "
            f"(one of: {', '.join(TEMPLATE_KINDS)})"
        )
    if kind == "JobSet" and not job_specs(tpl):
        raise SpecError(
            "spec.trialTemplate.spec.replicatedJobs: a JobSet trial lists at least one "
            "replicated Job, each with template.spec (a JobSpec)"
        )
    for t in pod_templates(tpl):
        containers = (t.template.get("spec") or {}).get("containers")
        if not isinstance(containers, list) or not containers:
            raise SpecError(f"{t.path}.spec.containers: list at least one container")
        for i, c in enumerate(containers):
            if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
                raise SpecError(f"{t.path}.spec.containers[{i}]: needs a name and an image")
        restart = t.template["spec"].get("restartPolicy", "Never")
        if restart not in ("Never", "OnFailure"):
            raise SpecError(f"{t.path}.spec.restartPolicy: a Job's pods need Never or OnFailure")
    names = {p.name for p in spec.parameters}
    for kind, field in placeholders(tpl):
        if kind == "params" and field not in names:
            raise SpecError(
                f"spec.trialTemplate: ${{params.{field}}} names no parameter "
                f"(parameters: {', '.join(sorted(names))})"
            )
        if (kind == "trial" and field not in TRIAL_FIELDS) or (
            kind == "study" and field not in STUDY_FIELDS
        ):
            raise SpecError(f"spec.trialTemplate: unknown placeholder ${{{kind}.{field}}}")
        if kind not in ("params", "trial", "study"):
            raise SpecError(f"spec.trialTemplate: unknown placeholder ${{{kind}.{field}}}")


def placeholders(obj: Any) -> set[tuple[str, str]]:
    """Every ${kind.field} used anywhere in a JSON-like tree."""
    found: set[tuple[str, str]] = set()
    if isinstance(obj, str):
        found.update(PLACEHOLDER.findall(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            found |= placeholders(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= placeholders(v)
    return found


_ABSENT = object()


def is_active(p: Parameter, values: Mapping[str, Any]) -> bool:
    if p.when is None:
        return True
    parent = values.get(p.when.parameter, _ABSENT)
    return parent is not _ABSENT and any(_same(parent, v) for v in p.when.in_)


def _same(a: Any, b: Any) -> bool:
    # `True == 1` in Python; a boolean choice must not match a number.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def check_values(parameters: Sequence[Parameter], values: Mapping[str, Any]) -> list[str]:
    """Problems with given values (enqueued or warm-started configurations)."""
    known = {p.name for p in parameters}
    problems = [f"unknown parameter {k!r}" for k in values if k not in known]
    for p in parameters:
        if p.name not in values:
            if is_active(p, values):
                problems.append(f"missing parameter {p.name!r}")
        elif not _allowed(p, values[p.name]):
            problems.append(f"{p.name}={values[p.name]!r} is outside its range")
    return problems


def _allowed(p: Parameter, v: Any) -> bool:
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if p.float is not None:
        return number and p.float.low <= v <= p.float.high
    if p.int is not None:
        return number and float(v).is_integer() and p.int.low <= v <= p.int.high
    assert p.categorical is not None
    return any(_same(v, c) for c in p.categorical.choices)
