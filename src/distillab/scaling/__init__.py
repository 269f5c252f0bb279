"""The distillation scaling law (Busbridge et al. 2025): laws, FLOPs, fitting and compute-optimal planning.

Independent of the other stages. The figures live in `distillab.scaling.plots` (imports matplotlib).
"""

from distillab.scaling.fit import (
    FitData,
    FitReport,
    LawFit,
    fit_coefficients,
    fit_distillation,
    fit_supervised,
)
from distillab.scaling.flops import (
    SCENARIOS,
    ForwardFlops,
    RunFlops,
    Scenario,
    distillation_flops,
    exact_flops_per_token,
    forward_flops_per_token,
    get_scenario,
    model_forward_flops,
    non_embedding_params,
    run_flops,
)
from distillab.scaling.laws import (
    BUSBRIDGE2025,
    CoefficientSet,
    DistillationCoefficients,
    SupervisedCoefficients,
    compute_optimal_exponents,
    distillation_loss,
    load_coefficients,
    save_coefficients,
    supervised_loss,
)
from distillab.scaling.plan import (
    Plan,
    Teacher,
    best_existing_teacher,
    compute_optimal_plan,
    crossover_tokens,
    distillation_wins,
    optimal_teacher_loss,
)
from distillab.scaling.runs import Runs, load_runs, save_runs, synthetic_runs

__all__ = [
    "BUSBRIDGE2025",
    "SCENARIOS",
    "CoefficientSet",
    "DistillationCoefficients",
    "FitData",
    "FitReport",
    "ForwardFlops",
    "LawFit",
    "Plan",
    "RunFlops",
    "Runs",
    "Scenario",
    "SupervisedCoefficients",
    "Teacher",
    "best_existing_teacher",
    "compute_optimal_exponents",
    "compute_optimal_plan",
    "crossover_tokens",
    "distillation_flops",
    "distillation_loss",
    "distillation_wins",
    "exact_flops_per_token",
    "fit_coefficients",
    "fit_distillation",
    "fit_supervised",
    "forward_flops_per_token",
    "get_scenario",
    "load_coefficients",
    "load_runs",
    "model_forward_flops",
    "non_embedding_params",
    "optimal_teacher_loss",
    "run_flops",
    "save_coefficients",
    "save_runs",
    "supervised_loss",
    "synthetic_runs",
]
