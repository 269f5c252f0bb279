"""The supervised and the distillation scaling laws (Busbridge et al. 2025, Eq. 1 and Eq. 8), in log space.

Every law function is vectorised: numpy arrays (or scalars) in, arrays out, broadcasting as numpy does.
Coefficient sets are frozen dataclasses; `busbridge2025` (the paper's Table 6) is the default named set, and
any set can be saved to / loaded from JSON or YAML (the output of `distillab scaling fit` is one). A fitted set
records the training method it was fitted on (`method`), so a prediction is only made for students of that method.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from distillab.errors import ConfigError

DEFAULT_COEFFICIENTS = "busbridge2025"
FIT_METHODS = ("supervised", "hard", "soft", "soft_data")


@dataclass(frozen=True)
class SupervisedCoefficients:
    """L(N, D) = E + (A / N^alpha + B / D^beta)^gamma."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    gamma: float


@dataclass(frozen=True)
class DistillationCoefficients:
    """The primed coefficients of Eq. 8: A', B', alpha', beta', gamma', c0, c1, f1, d1."""

    A: float
    B: float
    alpha: float
    beta: float
    gamma: float
    c0: float
    c1: float
    f1: float
    d1: float


@dataclass(frozen=True)
class CoefficientSet:
    """A named pair of supervised and distillation coefficients, with optional intervals and provenance.

    `method` is the training method the set was fitted on (one of FIT_METHODS): "supervised" for a fit of the
    supervised law alone; "hard", "soft" or "soft_data" for a distillation law fitted on runs of that method
    (its supervised part gives Ltilde_S). None is the paper's set, fitted on other models and data.
    `intervals` maps "supervised.E", "distillation.c0", ... to a (low, high) interval; `metadata` holds free
    provenance (source, fit statistics). Neither takes part in equality.
    """

    name: str
    supervised: SupervisedCoefficients
    distillation: DistillationCoefficients
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict, compare=False)
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    method: str | None = None

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in FIT_METHODS:
            raise ConfigError(
                f"coefficient set {self.name!r}: unknown method {self.method!r}; "
                f"choose from {', '.join(FIT_METHODS)}"
            )


BUSBRIDGE2025 = CoefficientSet(
    name="busbridge2025",
    supervised=SupervisedCoefficients(E=1.220, A=3355.0, B=18186.0, alpha=0.408, beta=0.431, gamma=0.452),
    distillation=DistillationCoefficients(
        A=2243.0, B=24181.0, alpha=0.321, beta=0.637, gamma=0.764, c0=2.549, c1=522.6, f1=0.090, d1=1.315
    ),
    intervals={
        "supervised.E": (1.190, 1.247),
        "supervised.A": (3346.0, 3360.0),
        "supervised.B": (18157.0, 18236.0),
        "supervised.alpha": (0.405, 0.411),
        "supervised.beta": (0.428, 0.433),
        "supervised.gamma": (0.442, 0.461),
        "distillation.A": (2227.0, 2255.0),
        "distillation.B": (24084.0, 24266.0),
        "distillation.alpha": (0.319, 0.324),
        "distillation.beta": (0.634, 0.640),
        "distillation.gamma": (0.732, 0.788),
        "distillation.c0": (2.425, 2.615),
        "distillation.c1": (522.6, 522.6),
        "distillation.f1": (0.088, 0.093),
        "distillation.d1": (1.302, 1.327),
    },
    metadata={
        "source": "Busbridge et al. 2025, Distillation Scaling Laws, Table 6 (90% bootstrap intervals)"
    },
)

NAMED_COEFFICIENTS: dict[str, CoefficientSet] = {BUSBRIDGE2025.name: BUSBRIDGE2025}


# --- log-space building blocks (shared with the fitter) -------------------------------------------------


def log_power_term(log_n: ArrayLike, log_d: ArrayLike, log_a, log_b, alpha, beta) -> np.ndarray:
    """log(A / N^alpha + B / D^beta) = LSE(log A - alpha log N, log B - beta log D)."""
    return np.logaddexp(
        np.subtract(log_a, np.multiply(alpha, log_n)), np.subtract(log_b, np.multiply(beta, log_d))
    )


def scaled_softplus(x: ArrayLike, f: ArrayLike) -> np.ndarray:
    """f * LSE(0, x / f) for f >= 0, written so that f = 0 gives its limit max(x, 0) without a 0/0."""
    x = np.asarray(x, dtype=float)
    f = np.asarray(f, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(f > 0, f * np.log1p(np.exp(-np.abs(x) / f)), 0.0)
    return np.maximum(x, 0.0) + tail


def supervised_log_loss_terms(log_n, log_d, log_e, log_a, log_b, alpha, beta, gamma) -> np.ndarray:
    """log L = LSE[log E, gamma LSE(log A - alpha log N, log B - beta log D)] on raw (broadcastable) terms."""
    return np.logaddexp(log_e, np.multiply(gamma, log_power_term(log_n, log_d, log_a, log_b, alpha, beta)))


def distillation_log_loss_terms(
    log_n, log_d, log_teacher, log_supervised, log_a, log_b, alpha, beta, gamma, c0, c1, f1, log_d1
) -> np.ndarray:
    """Paper Eq. 49 on raw (broadcastable) terms; `log_supervised` is log Ltilde_S from the supervised law."""
    gap = scaled_softplus(np.subtract(np.subtract(log_teacher, log_supervised), log_d1), f1)
    student = np.multiply(gamma, log_power_term(log_n, log_d, log_a, log_b, alpha, beta))
    return np.logaddexp(log_teacher, -np.multiply(c0, log_teacher) - np.multiply(c1, gap) + student)


# --- the laws on coefficient sets -------------------------------------------------------------------------


def supervised_log_loss(
    params: ArrayLike, tokens: ArrayLike, coefficients: SupervisedCoefficients
) -> np.ndarray:
    """log L(N, D) of the supervised law (Eq. 1). `tokens` may be np.inf (infinite data)."""
    c = coefficients
    return supervised_log_loss_terms(
        np.log(params), np.log(tokens), math.log(c.E), math.log(c.A), math.log(c.B), c.alpha, c.beta, c.gamma
    )


def supervised_loss(params: ArrayLike, tokens: ArrayLike, coefficients: SupervisedCoefficients) -> np.ndarray:
    """L(N, D) in nats/token: the loss of a model of N non-embedding parameters trained on D data tokens."""
    return np.exp(supervised_log_loss(params, tokens, coefficients))


def distillation_log_loss(
    student_params: ArrayLike,
    student_tokens: ArrayLike,
    teacher_loss: ArrayLike,
    coefficients: CoefficientSet,
) -> np.ndarray:
    """log L_S(N_S, D_S, L_T) of the distillation law (Eq. 8), evaluated as Eq. 49."""
    c = coefficients.distillation
    log_n, log_d = np.log(student_params), np.log(student_tokens)
    log_supervised = supervised_log_loss(student_params, student_tokens, coefficients.supervised)
    return distillation_log_loss_terms(
        log_n,
        log_d,
        np.log(teacher_loss),
        log_supervised,
        math.log(c.A),
        math.log(c.B),
        c.alpha,
        c.beta,
        c.gamma,
        c.c0,
        c.c1,
        c.f1,
        math.log(c.d1),
    )


def distillation_loss(
    student_params: ArrayLike,
    student_tokens: ArrayLike,
    teacher_loss: ArrayLike,
    coefficients: CoefficientSet,
) -> np.ndarray:
    """L_S in nats/token: a student of N_S parameters distilled on D_S tokens from a teacher of loss L_T."""
    return np.exp(distillation_log_loss(student_params, student_tokens, teacher_loss, coefficients))


def compute_optimal_exponents(coefficients: CoefficientSet) -> dict[str, float]:
    """N* ∝ C^a, D* ∝ C^b for the supervised law and a', b' for the student term of the distillation law."""
    s, d = coefficients.supervised, coefficients.distillation
    return {
        "a": s.beta / (s.alpha + s.beta),
        "b": s.alpha / (s.alpha + s.beta),
        "a_distillation": d.beta / (d.alpha + d.beta),
        "b_distillation": d.alpha / (d.alpha + d.beta),
    }


# --- coefficient sets: names and files --------------------------------------------------------------------


def coefficients_to_dict(coefficients: CoefficientSet) -> dict[str, Any]:
    """A plain, JSON/YAML-ready dict; `coefficients_from_dict` reverses it."""
    out: dict[str, Any] = {
        "name": coefficients.name,
        "method": coefficients.method,
        "supervised": dataclasses.asdict(coefficients.supervised),
        "distillation": dataclasses.asdict(coefficients.distillation),
    }
    if coefficients.intervals:
        out["intervals"] = {key: [float(lo), float(hi)] for key, (lo, hi) in coefficients.intervals.items()}
    if coefficients.metadata:
        out["metadata"] = dict(coefficients.metadata)
    return out


def _section(data: Mapping[str, Any], key: str, cls: type, source: str):
    section = data.get(key)
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: missing the {key!r} section of a coefficient set")
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [name for name in names if name not in section]
    unknown = [name for name in section if name not in names]
    if missing or unknown:
        raise ConfigError(
            f"{source}: {key} coefficients: missing {missing}, unknown {unknown}; expected {names}"
        )
    values = {}
    for name in names:
        try:
            values[name] = float(section[name])
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key}.{name} must be a number, got {section[name]!r}") from None
        if not math.isfinite(values[name]):
            raise ConfigError(f"{source}: {key}.{name} must be finite, got {section[name]!r}")
    return cls(**values)


def coefficients_from_dict(data: Mapping[str, Any], source: str = "coefficients") -> CoefficientSet:
    """Build a CoefficientSet from the dict layout written by `coefficients_to_dict`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a coefficient set must be a mapping, got {type(data).__name__}")
    try:
        intervals = {
            key: (float(lo), float(hi)) for key, (lo, hi) in dict(data.get("intervals") or {}).items()
        }
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: intervals must map names to [low, high] pairs of numbers") from None
    supervised = _section(data, "supervised", SupervisedCoefficients, source)
    distillation = _section(data, "distillation", DistillationCoefficients, source)
    try:
        return CoefficientSet(
            name=str(data.get("name") or source),
            supervised=supervised,
            distillation=distillation,
            intervals=intervals,
            metadata=dict(data.get("metadata") or {}),
            method=data.get("method"),
        )
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in {".yaml", ".yml"}


def save_coefficients(coefficients: CoefficientSet, path: str | Path) -> Path:
    """Write a coefficient set as JSON, or YAML when the file name ends in .yaml/.yml."""
    path = Path(path)
    data = coefficients_to_dict(coefficients)
    if _is_yaml(path):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_coefficients(name_or_path: str | Path | CoefficientSet = DEFAULT_COEFFICIENTS) -> CoefficientSet:
    """A named set (`busbridge2025`) or a JSON/YAML file from `save_coefficients` / `scaling fit --out`."""
    if isinstance(name_or_path, CoefficientSet):
        return name_or_path
    key = str(name_or_path)
    if key in NAMED_COEFFICIENTS:
        return NAMED_COEFFICIENTS[key]
    path = Path(key)
    if not path.is_file():
        raise ConfigError(
            f"unknown coefficient set {key!r}: not a named set ({', '.join(NAMED_COEFFICIENTS)}) nor a file"
        )
    text = path.read_text()
    try:
        if _is_yaml(path):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError, reported on one line
        raise ConfigError(
            f"{path}: not a valid {'YAML' if _is_yaml(path) else 'JSON'} file ({err})"
        ) from None
    return coefficients_from_dict(data, source=str(path))
