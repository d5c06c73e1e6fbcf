"""The names every module shares: setting axes and their labels, column groups, verdict words.

One vocabulary, so that a new axis or metric is added in one place. It imports nothing: the
Snakefile, the registry check and every stage can read it without torch or plotting.
"""

from __future__ import annotations

GALANTI_EPS = (0.1, 0.3, 0.5)  # ε of Paper B's Theorem 3.3 evaluated (rankbias.paper_b)
VERDICTS = ("supported", "contradicted", "mixed", "inconclusive")
FINDINGS = ("borne out", "not borne out", "undecided", "context")  # of one concern
# The setting axes and their short labels (case names, figure legends, scope sentences).
AXIS_LABEL = {
    "depth": "L",
    "width": "H",
    "batch_size": "B",
    "lr": "lr",
    "weight_decay": "wd",
    "wd_function": "g",
}
SETTING_AXES = tuple(AXIS_LABEL)  # what tells two settings of one data set apart, in this order
SHAPE_AXES = ("depth", "width", "batch_size")  # what every member of one training job shares
MODEL_AXES = (*SETTING_AXES, "dataset")  # what tells two models apart (granulated τ)
TREND_AXES = ("batch_size", "lr", "weight_decay", "depth")  # axes a rank trend is read along
# Rank and norm metrics of a weight matrix (rankbias.spectra), at the end and at logged epochs.
SPECTRUM_METRICS = (
    "fro_norm",
    "spectral_norm",
    "rank_galanti",
    "rank_rel",
    "rank_cut",
    "stable_rank",
    "effective_rank",
    "residual_1",
    "residual_2",
)
# Paper A's quantities, on first-layer rows of two-layer nets (rankbias.paper_a).
UNIT_STATES = ("units_collapsed", "units_dead", "units_linear", "units_zero_input")  # V's units
PAPER_A_COLUMNS = (
    "eps_batch_max",
    "eps_batch_mean",
    "eps_full",
    "thm26_bound",
    "thm26_ratio",
    "dist_rank2",
    *UNIT_STATES,
)
# Model-level generalization bounds and the margin they use (rankbias.bounds).
BOUND_COLUMNS = (
    "bound_paramcount_full",
    "bound_paramcount_rank2",
    "bound_paramcount_rankr",
    "bound_grs",
    "margin_gamma",
    "bound_spectral",
)
# The controls of science.md (rankbias.controls): what weight decay does besides learning low rank.
CONTROL_COLUMNS = ("init_factor", "decay_horizon", "movement")
LEARNED_METRICS = tuple(f"{name}_learned" for name in SPECTRUM_METRICS)  # of W_T − s_T·W_0
LIVE_METRICS = tuple(f"{name}_live" for name in SPECTRUM_METRICS)  # V over its live units
PLATEAU_METRICS = ("effective_rank", "effective_rank_learned", "residual_2", "train_loss")
PLATEAU_COLUMNS = tuple(
    f"{kind}_{name}" for name in PLATEAU_METRICS for kind in ("plateau_change", "plateaued")
)
# Computed by the verdict engine from measured columns (rankbias.summaries.with_derived).
DERIVED_COLUMNS = ("eps_rel", "units_switching", "test_error", "val_error")
# Columns of results/tables/<experiment>.csv a check may name as `metric` or `relative_to`.
METRICS = (
    "train_loss",
    "val_loss",
    "test_loss",
    "train_acc",
    "val_acc",
    "test_acc",
    "train_r2",
    "gap",
    *SPECTRUM_METRICS,
    *LEARNED_METRICS,
    *CONTROL_COLUMNS,
    *PLATEAU_COLUMNS,
    *(f"{name}_{eps}" for eps in GALANTI_EPS for name in ("galanti_bound", "sv_above", "rank_eps")),
    *PAPER_A_COLUMNS,
    *LIVE_METRICS,
    *BOUND_COLUMNS,
    "norm_ratio",
    "steps",
    *DERIVED_COLUMNS,
)
HYPER_COLUMNS = (
    "dataset",
    "loss",
    "depth",
    "width",
    "batch_norm",
    "batch_size",
    "epochs",
    "lr",
    "weight_decay",
    "wd_function",
)

# Column groups of the report's per-experiment tables (rankbias.summaries.report_tables).
RANK_TABLE_COLUMNS = (
    "train_loss",
    "test_loss",
    "test_acc",
    "gap",
    "rank_galanti",
    "rank_rel",
    "rank_cut",
    "effective_rank",
    "stable_rank",
    "residual_1",
    "residual_2",
)
LEARNED_TABLE_COLUMNS = (  # W beside its learned part W − s_T·W_0, and the regime
    "init_factor",
    "decay_horizon",
    "movement",
    "effective_rank",
    "effective_rank_learned",
    "rank_cut",
    "rank_cut_learned",
    "plateau_change_effective_rank",
)
PAPER_B_TABLE_COLUMNS = (
    "sv_above_0.1",
    "rank_eps_0.1",
    "galanti_bound_0.1",
    "sv_above_0.5",
    "rank_eps_0.5",
    "galanti_bound_0.5",
    "norm_ratio",
    "test_acc",
)
GENERALIZATION_TABLE_COLUMNS = ("gap", *BOUND_COLUMNS)
