# Helpers only: config validation, the training plan, and input/params functions for the rules.
import json
import os
import sys

import yaml
from snakemake.exceptions import WorkflowError

# The workflow and its jobs use the rankbias package of this checkout, installed or not: jobs in
# conda envs or on cluster nodes find it through PYTHONPATH (SLURM jobs get --export=ALL).
SOURCE_DIR = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SOURCE_DIR)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SOURCE_DIR, os.environ.get("PYTHONPATH")]))
)


from rankbias import memory, plan
from rankbias.config import ConfigError, check_config
from rankbias.data import MIRROR_ENV
from rankbias.tables import is_url
from rankbias.devices import DEVICE_ENV
from rankbias.storage import write_text

SCHEMAS = os.path.join(workflow.basedir, "workflow", "schemas")
# Named in messages: the config files as given (the Snakefile's default, then --configfile ones).
CONFIG_SOURCE = " + ".join(map(str, dict.fromkeys(workflow.configfiles))) or "config"


def registry_file(name):
    """A claim registry: relative to the working directory, else to the workflow (so a project
    folder needs no copy of config/claims.yaml, nor of an example's registry)."""
    shipped = os.path.join(workflow.basedir, name)
    return name if os.path.exists(name) or not os.path.exists(shipped) else shipped


CLAIMS_FILE = registry_file(str(config.get("claims_file", "config/claims.yaml")))
# Your own claim registry (README, "Audit your own claim"); [] when there is none (an input
# list of the rules that read registries).
USER_CLAIMS_FILES = (
    [registry_file(config["user_claims_file"])] if config.get("user_claims_file") else []
)
try:  # every message names the file, the key and what is allowed; nothing has run yet
    # SHAPES: every data set's planned shape, for the training jobs' memory estimates
    JOBS, _registry, SHAPES = check_config(
        config, SCHEMAS, CONFIG_SOURCE, CLAIMS_FILE, "".join(USER_CLAIMS_FILES)
    )
except ConfigError as error:
    raise WorkflowError(f"invalid configuration, nothing was run:\n{error}") from None
# Where the raw files come from and where training runs change no result: jobs read them from
# the environment, not from params or the shell command, so changing them reruns nothing
# (`snakemake --forcerun train` retrains on purpose). The mirror falls back to the user's own
# $RANKBIAS_DATA_MIRROR.
os.environ[DEVICE_ENV] = str(config.get("device", "auto"))
if config.get("data", {}).get("mirror"):
    os.environ[MIRROR_ENV] = str(config["data"]["mirror"])
EXPERIMENTS = list(config["experiments"])  # config order is the report order
DATASETS = plan.used_datasets(config, JOBS)
# Shipped with the workflow, so found next to the Snakefile even when --directory points elsewhere.
REPORT_TEMPLATE = os.path.join(workflow.basedir, "report", "templates", "index.html.j2")
FIGURE_TEMPLATE = os.path.join(workflow.basedir, "report", "templates", "figure.html.j2")
# The report's prose beside its template: figure captions, table notes, metric definitions.
REPORT_TEXT = os.path.join(workflow.basedir, "report", "templates", "text.yaml")
# The paper-scale config the report's scope box compares this run with.
PAPER_CONFIG = os.path.join(workflow.basedir, "config", "paper.yaml")
# Paper B's reported ResNet-18 values, set beside ours where an experiment runs their setting.
PAPER_B_REPORTED = os.path.join(workflow.basedir, "config", "paper_b_reported.yaml")


wildcard_constraints:
    experiment=r"[A-Za-z0-9_.-]+",
    group=r"[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",
    source=r"[A-Za-z0-9_]+",
    figure="|".join(plan.FIGURE_KINDS),


def raw_manifest(wildcards):
    return plan.raw_manifest(config, wildcards.dataset) or []


def table_file(wildcards):
    """Input of `fetch_table`: the user's file when it is a local path (a URL is fetched)."""
    path = config["datasets"][wildcards.dataset]["path"]
    return [] if is_url(path) else path


def dataset_spec(wildcards):
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def job_spec(wildcards):
    return JOBS[(wildcards.experiment, wildcards.group)]


def train_spec(wildcards):
    """Params of `train`: what changes its outputs (plan.training_spec), nothing else."""
    return json.dumps(plan.training_spec(job_spec(wildcards)), sort_keys=True)


def measure_settings(wildcards):
    """Params of `measure`: each job's measurement-only keys (plan.measure_settings)."""
    return json.dumps(
        {
            group: plan.measure_settings(JOBS[(wildcards.experiment, group)])
            for group in experiment_groups(wildcards.experiment)
        },
        sort_keys=True,
    )


def train_checkpoint_dir(wildcards):
    """Not an output: Snakemake deletes a failed job's outputs, and a retried, rerun-incomplete or
    requeued job must find its checkpoint to resume from (removed when the job succeeds)."""
    return f"results/checkpoints/{wildcards.experiment}/{wildcards.group}"


def train_data(wildcards):
    return f"results/data/{job_spec(wildcards)['dataset']}.npz"


def train_mem_mb(wildcards, attempt):
    """MB: estimated from the job's shapes (rankbias.memory, within 25 % of measured peaks) with
    a 50 % margin; each retry asks for half as much again."""
    spec = job_spec(wildcards)
    return memory.declared_mb(spec, SHAPES[spec["dataset"]], attempt)


def train_runtime(wildcards, attempt):
    """Minutes: generous for CPU laptops (about 1 s per member-epoch of 1,000 steps); clusters
    override per profile. Doubles with every retry."""
    spec = job_spec(wildcards)
    steps = spec["steps"] or spec["epochs"] * 1000
    return attempt * (30 + steps * len(spec["members"]) // 60_000)


def experiment_groups(experiment):
    return sorted(group for exp, group in JOBS if exp == experiment)


def experiment_files(pattern):
    """Input function: `pattern` expanded over every job of the wildcard's experiment."""

    def files(wildcards):
        return [
            pattern.format(experiment=wildcards.experiment, group=group)
            for group in experiment_groups(wildcards.experiment)
        ]

    return files


def experiment_data(wildcards):
    """The prepared data sets an experiment's jobs train on (or its checkpoints are tried on)."""
    block = config["experiments"][wildcards.experiment]
    datasets = {
        JOBS[(wildcards.experiment, g)]["dataset"] for g in experiment_groups(wildcards.experiment)
    }
    datasets |= {entry["dataset"] for entry in block.get("checkpoints", []) if "dataset" in entry}
    return [f"results/data/{dataset}.npz" for dataset in sorted(datasets)]


def experiment_checkpoints(wildcards):
    """Input function of `measure`: the files of an experiment of checkpoints trained elsewhere."""
    entries = config["experiments"][wildcards.experiment].get("checkpoints", [])
    return [entry[key] for entry in entries for key in ("path", "init") if key in entry]


def checkpoint_spec(wildcards):
    """Params function of `measure`: an experiment's checkpoints as JSON ("" for trained jobs)."""
    entries = config["experiments"][wildcards.experiment].get("checkpoints")
    if not entries:
        return ""
    spec = {"name": wildcards.experiment, "checkpoints": entries, "metrics": config["metrics"]}
    return json.dumps(spec, sort_keys=True)


def experiment_run_dirs(wildcards):
    """Params function: the run folders of an experiment's jobs (their files are inputs)."""
    return [
        f"results/runs/{wildcards.experiment}/{g}" for g in experiment_groups(wildcards.experiment)
    ]


def experiment_axis(key, default):
    """Params function: the experiment's `sweep` (x axis) or `hue` (colour axis)."""

    def axis(wildcards):
        return config["experiments"][wildcards.experiment].get(key, default)

    return axis


def experiment_subjects(wildcards):
    """Params function: the claims and concerns whose rules read this experiment (their
    thresholds are drawn on its figures)."""
    return config["experiments"][wildcards.experiment].get("claims", [])


def figure_caption(wildcards):
    """Params function of `figure`: the kind's title and caption from report/templates/text.yaml,
    the same words the HTML report prints (report/figure.rst shows them in `snakemake --report`)."""
    with open(REPORT_TEXT) as handle:
        return yaml.safe_load(handle)["figures"][wildcards.figure]


def figure_files():
    """Every figure of every experiment, in config order: what the report embeds."""
    return [
        f"results/figures/{experiment}/{figure}.svg"
        for experiment in EXPERIMENTS
        for figure in plan.experiment_figures(config["experiments"][experiment])
    ]


def run_meta(wildcards):
    """Params function of `run_config` (a function, so braces in descriptions are not read as
    wildcards): the experiments' titles and figures and the whole config, as sorted JSON, so a
    config change reruns what reads it."""
    experiments = {
        name: {key: block.get(key) for key in ("title", "description", "claims", "sweep", "hue")}
        | {
            "figures": plan.experiment_figures(block),
            "checkpoints": len(block.get("checkpoints", [])),
        }
        for name, block in config["experiments"].items()
    }
    return json.dumps({"experiments": experiments, "config": config}, sort_keys=True)
