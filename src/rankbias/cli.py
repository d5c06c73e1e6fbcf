"""Command line: one subcommand per workflow rule, so every rule is `python -m rankbias <step>`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rankbias import data, memory, stop_signals
from rankbias.checkpoint import DEFAULT_SECONDS, SECONDS_ENV, Checkpointer, default_seconds
from rankbias.devices import DEVICE_ENV, job_device
from rankbias.plan import FIGURE_KINDS
from rankbias.provenance import stamped
from rankbias.storage import read_json, read_npz, write_csv, write_json, write_npz


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cmd_fetch(args: argparse.Namespace) -> None:
    if args.source == "table":  # a user's file: its path or URL is in the data set's spec
        from rankbias.tables import fetch_table

        if not args.spec:
            raise ValueError("--source table needs --spec (the data set's config block, JSON)")
        manifest = fetch_table(json.loads(args.spec), Path(args.manifest).parent)
    else:
        manifest = data.fetch(args.source, Path(args.manifest).parent, args.mirror or None)
    for name, entry in manifest["files"].items():
        _log(f"{name}: {entry['origin']}")


def cmd_prepare(args: argparse.Namespace) -> None:
    spec = json.loads(args.spec)
    raw_dir = Path(args.raw_manifest).parent if args.raw_manifest else None
    try:
        arrays, info = data.prepare(spec, raw_dir)
    except data.DataError as error:  # name the data set: its config key is datasets.<name>
        raise data.DataError(
            f"data set {Path(args.out_npz).stem} ({args.out_npz}): {error}"
        ) from None
    data.write_prepared(arrays, stamped(info), args.out_npz, args.out_json)
    _log(
        f"prepared {spec['source']}: {info['n_train']} train, {info['n_test']} test, "
        f"{info['n_features']} features"
    )


def requested_device(args: argparse.Namespace, spec: dict | None = None) -> str:
    """--device, else $RANKBIAS_DEVICE (how the workflow passes the config's `device`: recorded
    in result.json, never a rerun trigger), else the spec's, else auto."""
    return args.device or os.environ.get(DEVICE_ENV) or (spec or {}).get("device", "auto")


def cmd_train(args: argparse.Namespace) -> None:
    """Train one ensemble. A stop signal (caught since the process began, rankbias.stop_signals)
    ends the job with 128 + signal: before training, with nothing trained; during it, after a
    checkpoint is saved. Without a checkpoint directory, once set up, the signals' default
    action (death) is back: there is nothing to save."""
    stop_signals.catch()  # again, for callers of main() that skipped `python -m rankbias`
    import torch

    from rankbias.train import train_ensemble

    torch.set_num_threads(args.threads)  # the job's allocation: Snakemake's `threads`
    spec = json.loads(args.spec)
    arrays, _ = data.load_prepared(args.data)
    device, gpu_lock = job_device(requested_device(args, spec), log=_log)  # held until exit
    spec = {**spec, "device": device}
    checkpointer = None
    if args.checkpoint_dir:
        every_s = default_seconds() if args.checkpoint_seconds is None else args.checkpoint_seconds
        checkpointer = Checkpointer(args.checkpoint_dir, every_s, log=_log)
    else:
        stop_signals.release()  # no checkpoint to save: a stop signal ends the job at once
    try:
        stop_signals.stop_if_received("before training started: nothing was trained yet")
        result = train_ensemble(spec, arrays, log=_log, checkpointer=checkpointer)
    except stop_signals.Preempted as stop:
        _log(f"{stop}; rerun the job to resume")
        sys.exit(stop.exit_code)
    out = Path(args.out_dir)
    history = result.history
    for key in ("experiment", "group", "dataset", "loss", "depth", "width", "batch_size"):
        history.insert(0, key, spec[key])
    write_npz(out / "init.npz", result.init)
    write_npz(out / "final.npz", result.final)
    write_csv(out / "history.csv", history)
    write_json(
        out / "result.json",
        stamped(
            {
                "spec": spec,
                "device": result.device,
                "threads": args.threads,
                "torch": torch.__version__,
                "wall_time_s": result.wall_time_s,
                "steps_time_s": result.steps_s,
                "diverged_epoch": result.diverged_epoch.tolist(),
                "resumed_at": result.resumed,
                "memory": {  # the estimate the workflow declared (mem_mb adds 50 %) and the peak
                    "estimated_mb": memory.training_mb(
                        spec, memory.arrays_shape(arrays, spec["loss"])
                    ),
                    "peak_rss_mb": round(memory.peak_rss_mb(), 1),
                },
            }
        ),
    )
    if checkpointer:
        checkpointer.clear()
    if gpu_lock:
        gpu_lock.close()  # the GPU is free for the next job
    _log(
        f"done in {result.wall_time_s:.1f}s; diverged members: "
        f"{int((result.diverged_epoch >= 0).sum())}/{len(spec['members'])}"
    )


def cmd_measure(args: argparse.Namespace) -> None:
    """Every training job of one experiment in one process: the start-up (torch, the data) is
    paid once, not once a job."""
    import torch

    from rankbias.measure import measure_job

    torch.set_num_threads(args.threads)  # torch's default takes every core: jobs would collide
    data_paths = {Path(path).stem: path for path in args.data}
    settings = json.loads(args.settings) if args.settings else {}
    if args.checkpoints:
        measure_checkpoints(args, json.loads(args.checkpoints), data_paths)
        return
    loaded: dict[str, dict] = {}
    tables, histories, spectra = [], [], {}
    for run in map(Path, args.run_dirs):
        record = read_json(run / "result.json")
        spec = record["spec"]
        if settings:  # the measurement's own keys (plan.measure_settings), as the config has them
            if spec["group"] not in settings:
                raise ValueError(f"--settings: no measurement settings for job {spec['group']}")
            spec = {**spec, **settings[spec["group"]]}
        if spec["dataset"] not in loaded:
            loaded[spec["dataset"]] = data.load_prepared(data_paths[spec["dataset"]])[0]
        final, init = (read_npz(run / f"{name}.npz") for name in ("final", "init"))
        history = pd.read_csv(run / "history.csv")
        table, job_spectra = measure_job(
            spec,
            final,
            init,
            history,
            np.asarray(record["diverged_epoch"]),
            loaded[spec["dataset"]],
        )
        members = np.asarray(sorted(m["member"] for m in spec["members"]))
        for key, value in {**job_spectra, "member": members}.items():
            spectra[f"{spec['group']}/{key}"] = value
        tables.append(table)
        histories.append(history)
        _log(
            f"{spec['group']}: {len(members)} members x {spec['depth']} layers; status "
            f"{table[table['layer'] == 1]['status'].value_counts().to_dict()}"
        )
    write_csv(args.out_table, pd.concat(tables, ignore_index=True))
    write_csv(args.out_history, pd.concat(histories, ignore_index=True))
    write_npz(args.out_spectra, spectra)
    write_json(args.out_code, stamped({"jobs": [Path(run).name for run in args.run_dirs]}))
    _log(f"measured {len(tables)} jobs")


def measure_checkpoints(
    args: argparse.Namespace, experiment: dict, data_paths: dict[str, str]
) -> None:
    """An experiment of checkpoints trained elsewhere (rankbias.audit): the same four outputs
    as for trained jobs; the history is empty (nothing was trained here)."""
    from rankbias.audit import measure_checkpoint

    loaded = {name: data.load_prepared(path) for name, path in data_paths.items()}
    tables, spectra = [], {}
    for entry in experiment["checkpoints"]:
        arrays, info = loaded.get(entry.get("dataset"), (None, None))
        table, keyed = measure_checkpoint(
            entry, experiment["name"], arrays, info, experiment.get("metrics", {})
        )
        for key, value in {**keyed, "member": np.array([0])}.items():
            spectra[f"{entry['name']}/{key}"] = value
        tables.append(table)
        note = table["not_computed"].iloc[0]
        _log(f"{entry['name']}: {len(table)} weights{'; not computed: ' + note if note else ''}")
    write_csv(args.out_table, pd.concat(tables, ignore_index=True))
    write_csv(args.out_history, pd.DataFrame(columns=["experiment", "group", "member", "layer"]))
    write_npz(args.out_spectra, spectra)
    names = [entry["name"] for entry in experiment["checkpoints"]]
    write_json(args.out_code, stamped({"jobs": names, "checkpoints": experiment["checkpoints"]}))
    _log(f"measured {len(tables)} checkpoints")


def cmd_figure(args: argparse.Namespace) -> None:
    from rankbias.figures import draw_figure

    spectra: dict[str, dict[str, np.ndarray]] = {}
    with np.load(args.spectra) as handle:  # keys <job>/<W1, W2, ..., member>
        for name in handle.files:
            group, key = name.split("/", 1)
            spectra.setdefault(group, {})[key] = handle[name]
    table, history = pd.read_csv(args.table), pd.read_csv(args.history)
    lines = []
    if args.registry:
        from rankbias.registry import load_registry
        from rankbias.thresholds import rule_lines

        registry = load_registry(args.registry, args.user_registry)
        lines = rule_lines(registry, args.subjects, args.experiment)
    draw_figure(args.kind, table, history, spectra, Path(args.out), args.sweep, args.hue, lines)
    _log(f"wrote {args.out}")


def short_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def cmd_claims(args: argparse.Namespace) -> None:
    from rankbias.claims import evaluate_claims
    from rankbias.registry import check_registry, load_registry, selected

    registry = load_registry(args.registry, args.user_registry)
    config = read_json(args.meta)["config"]
    check_registry(registry, config, args.registry)
    tables = {Path(p).stem: pd.read_csv(p) for p in args.tables}
    verdicts = evaluate_claims(selected(registry, config.get("only")), config, tables)
    verdicts["user"] = registry["user"]  # the user's ids and heading (the report's own section)
    verdicts["registry"] = {"file": args.registry, "sha256": short_sha256(args.registry)}
    for path in args.user_registry:
        verdicts["registry"] |= {"user_file": path, "user_sha256": short_sha256(path)}
    write_json(args.out, stamped(verdicts))
    counts = pd.Series([c["verdict"] for c in verdicts["claims"]]).value_counts().to_dict()
    _log(f"{len(verdicts['claims'])} claims: {counts}; unstable: {verdicts['summary']['unstable']}")
    findings = pd.Series([c["finding"] for c in verdicts["concerns"]]).value_counts().to_dict()
    _log(f"{len(verdicts['concerns'])} concerns: {findings}")


def cmd_statistics(args: argparse.Namespace) -> None:
    import yaml

    from rankbias.summaries import experiment_statistics

    reported = yaml.safe_load(Path(args.reported).read_text()) if args.reported else None
    result = experiment_statistics(pd.read_csv(args.table), args.sweep, reported)
    write_json(args.out, stamped(result))
    counts = {name: rows for name, rows in result.items() if isinstance(rows, list)}
    _log(f"{args.out}: " + ", ".join(f"{len(rows)} {name} rows" for name, rows in counts.items()))


def cmd_audit(args: argparse.Namespace) -> None:
    """Measure one checkpoint trained elsewhere and print its table (rankbias.audit)."""
    from rankbias.audit import Training, audit, load_state, text_table

    positions = {}
    for item in args.positions:
        name, _, count = item.rpartition("=")
        if not name or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--positions {item!r}: write TENSOR=N with N >= 1")
        positions[name] = int(count)
    training = Training(
        args.batch_size, args.lr, args.weight_decay, args.steps, args.init_factor, positions
    )
    arrays, loss = None, None
    if args.data:
        arrays, info = data.load_prepared(args.data)
        loss = "ce" if info["task"] == "classification" else "mse"
    init = load_state(args.init) if args.init else None
    table, spectra, note = audit(
        load_state(args.checkpoint), args.checkpoint, training, init, arrays, loss
    )
    print(text_table(table))
    bounds = [
        c
        for c in ("train_loss", "test_loss", "test_acc", "bound_grs", "bound_spectral")
        if c in table and table[c].notna().any()
    ]
    if bounds:
        print("model: " + ", ".join(f"{c} {table[c].iloc[0]:.4g}" for c in bounds))
    if note:
        print(f"not computed: {note}")
    if args.out_csv:
        write_csv(args.out_csv, table)
    if args.out_spectra:
        write_npz(args.out_spectra, spectra)


def cmd_compare_claims(args: argparse.Namespace) -> None:
    from rankbias.claims import compare

    rows = compare(read_json(Path(args.first)), read_json(Path(args.second)))
    print("| id | first | second | agreement | scope (first / second) | status |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        agreement = f"{row['first_agreement']:.0%} / {row['second_agreement']:.0%}"
        scope = " / ".join(s or "–" for s in (row["first_scope"], row["second_scope"]))
        print(
            f"| {row['id']} | {row['first']} | {row['second']} | {agreement} | {scope} "
            f"| {row['status']} |"
        )
    silent = [row["id"] for row in rows if row["status"] in ("flip", "scope differs")]
    if silent:
        sys.exit(f"verdicts that moved without being flagged unstable: {', '.join(silent)}")


def cmd_preflight(args: argparse.Namespace) -> None:
    """The preflight on the training device: its record is written only when every check holds,
    so a failure stops every training job (they need the record) with the numbers in the log."""
    import torch

    from rankbias.preflight import run_preflight

    torch.set_num_threads(args.threads)
    device, gpu_lock = job_device(requested_device(args), log=_log)
    record = run_preflight(device)
    for check in record["checks"]:
        mark = "ok  " if check["passed"] else "FAIL"
        _log(f"{mark} {check['check']}: {check['value']:.3g} (tolerance {check['tolerance']:g})")
    facts = {key: value for key, value in record.items() if key not in ("checks", "passed")}
    _log("device: " + ", ".join(f"{key} {value}" for key, value in facts.items()))
    if gpu_lock:
        gpu_lock.close()
    if not record["passed"]:
        failed = [check["check"] for check in record["checks"] if not check["passed"]]
        sys.exit(
            f"preflight failed on {device}: {'; '.join(failed)}. No training job will start; the "
            "numbers are above (README, 'The GPU preflight')"
        )
    write_json(args.out, stamped(record))


def cmd_report(args: argparse.Namespace) -> None:
    from rankbias.report import write_report

    write_report(
        Path(args.out),
        Path(args.template_dir),
        read_json(args.meta),
        [Path(p) for p in args.figures],
        [Path(p) for p in args.data_info],
        [Path(p) for p in args.runs],
        Path(args.claims),
        [Path(p) for p in args.statistics],
        Path(args.paper_config) if args.paper_config else None,
        [Path(p) for p in args.measured],
        Path(args.preflight) if args.preflight else None,
    )
    _log(f"wrote {args.out}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rankbias", description=__doc__)
    steps = top.add_subparsers(dest="step", required=True)

    fetch = steps.add_parser("fetch", help="obtain and verify the raw files of one source")
    fetch.add_argument(
        "--source", required=True, choices=sorted([*data.SOURCES, *data.USER_SOURCES])
    )
    fetch.add_argument("--spec", default="", help="a table data set's config block, as JSON")
    fetch.add_argument("--manifest", required=True, help="manifest.json to write in the raw dir")
    fetch.add_argument("--mirror", default="", help=f"mirror folder (else ${data.MIRROR_ENV})")
    fetch.set_defaults(func=cmd_fetch)

    prepare = steps.add_parser("prepare", help="standardise, split and subset one data set")
    prepare.add_argument("--spec", required=True, help="the data set's config block, as JSON")
    prepare.add_argument("--raw-manifest", default="", help="manifest of its raw files, if any")
    prepare.add_argument("--out-npz", required=True)
    prepare.add_argument("--out-json", required=True)
    prepare.set_defaults(func=cmd_prepare)

    train = steps.add_parser("train", help="train one ensemble")
    train.add_argument("--spec", required=True, help="the job spec from rankbias.plan, as JSON")
    train.add_argument("--data", required=True, help="prepared .npz")
    train.add_argument("--out-dir", required=True)
    train.add_argument("--threads", type=int, default=1)
    train.add_argument(
        "--device", default="", help=f"auto, cpu or cuda:N (default ${DEVICE_ENV}, else auto)"
    )
    train.add_argument(
        "--checkpoint-dir", default="", help="resume from / save checkpoints here (none if unset)"
    )
    train.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=None,
        help=f"seconds between checkpoints (default ${SECONDS_ENV}, else {DEFAULT_SECONDS:g})",
    )
    train.set_defaults(func=cmd_train)

    preflight = steps.add_parser(
        "preflight", help="check the training device against the CPU before any training job"
    )
    preflight.add_argument("--out", required=True, help="results/preflight.json")
    preflight.add_argument("--threads", type=int, default=1)
    preflight.add_argument(
        "--device", default="", help=f"auto, cpu or cuda:N (default ${DEVICE_ENV}, else auto)"
    )
    preflight.set_defaults(func=cmd_preflight)

    measure = steps.add_parser(
        "measure", help="rank metrics, bounds and status of every training job of an experiment"
    )
    measure.add_argument("--run-dirs", nargs="*", default=[], help="results/runs/<exp>/<job>")
    measure.add_argument(
        "--checkpoints",
        default="",
        help="JSON {name, checkpoints}: an experiment of checkpoints trained elsewhere",
    )
    measure.add_argument("--data", nargs="*", default=[], help="prepared <dataset>.npz files")
    measure.add_argument("--out-table", required=True, help="results/tables/<experiment>.csv")
    measure.add_argument("--out-history", required=True, help="<experiment>_history.csv")
    measure.add_argument("--out-spectra", required=True, help="<experiment>.spectra.npz")
    measure.add_argument(
        "--out-code", required=True, help="<experiment>.code.json: the code that measured"
    )
    measure.add_argument("--threads", type=int, default=1)
    measure.add_argument(
        "--settings",
        default="",
        help="JSON {job: {eval_batch, metrics}} from rankbias.plan.measure_settings",
    )
    measure.set_defaults(func=cmd_measure)

    figure = steps.add_parser("figure", help="one figure of one experiment")
    figure.add_argument("--kind", required=True, choices=FIGURE_KINDS)
    figure.add_argument("--table", required=True)
    figure.add_argument("--history", required=True)
    figure.add_argument("--spectra", required=True, help="<experiment>.spectra.npz")
    figure.add_argument("--out", required=True, help="the .svg to write")
    figure.add_argument("--sweep", default="weight_decay", help="the x axis of the figure")
    figure.add_argument("--hue", default="batch_size", help="the colour axis (grid, heatmap)")
    figure.add_argument("--registry", help="config/claims.yaml: draw the rules' thresholds")
    figure.add_argument(
        "--user-registry", nargs="*", default=[], help="user_claims_file: your rules' thresholds"
    )
    figure.add_argument(
        "--subjects", nargs="*", default=[], help="claim and concern ids of this experiment"
    )
    figure.add_argument("--experiment", help="the experiment (a check may name its experiments)")
    figure.set_defaults(func=cmd_figure)

    summary = steps.add_parser(
        "statistics",
        help="an experiment's seed-tested trends, tau, weight-decay benefit and report tables",
    )
    summary.add_argument("--table", required=True, help="results/tables/<experiment>.csv")
    summary.add_argument(
        "--sweep", default="weight_decay", help="the experiment's swept axis (its tables' rows)"
    )
    summary.add_argument(
        "--reported", help="Paper B's reported values beside ours (config/paper_b_reported.yaml)"
    )
    summary.add_argument("--out", required=True, help="results/statistics/<experiment>.json")
    summary.set_defaults(func=cmd_statistics)

    audit = steps.add_parser(
        "audit",
        help="rank metrics and bounds of a checkpoint trained elsewhere (safetensors, state dict)",
    )
    audit.add_argument("checkpoint", help="model.safetensors, or a state dict (.pt, .pth, .bin)")
    audit.add_argument("--init", help="the same model's initial checkpoint: the learned part")
    audit.add_argument("--batch-size", type=int, help="B it was trained with (Paper B's bound)")
    audit.add_argument("--lr", type=float, help="its (final) learning rate")
    audit.add_argument("--weight-decay", type=float, help="its coupled weight decay (wd = 2λ)")
    audit.add_argument("--steps", type=int, help="SGD steps taken: s_T = (1 − lr·wd)^steps")
    audit.add_argument("--init-factor", type=float, help="s_T itself (a schedule's product)")
    audit.add_argument(
        "--positions", nargs="*", default=[], help="TENSOR=N: a conv layer's output positions m_l"
    )
    audit.add_argument("--data", help="a prepared <dataset>.npz: losses and the norm bounds")
    audit.add_argument("--out-csv", help="write the whole table (every column) here")
    audit.add_argument("--out-spectra", help="write the singular values (one array a tensor)")
    audit.set_defaults(func=cmd_audit)

    twins = steps.add_parser(
        "compare-claims", help="two runs' claims.json side by side; exits 1 on a silent flip"
    )
    twins.add_argument("first", help="claims.json of one run")
    twins.add_argument("second", help="claims.json of another (e.g. other seeds, same grids)")
    twins.set_defaults(func=cmd_compare_claims)

    claims = steps.add_parser("claims", help="a verdict per claim of the registry")
    claims.add_argument("--registry", required=True, help="config/claims.yaml")
    claims.add_argument(
        "--user-registry", nargs="*", default=[], help="user_claims_file: your own claims"
    )
    claims.add_argument("--meta", required=True, help="results/run_config.json: the run's config")
    claims.add_argument("--tables", nargs="+", required=True, help="<experiment>.csv tables")
    claims.add_argument("--out", required=True, help="claims.json to write")
    claims.set_defaults(func=cmd_claims)

    report = steps.add_parser("report", help="render the HTML report")
    report.add_argument(
        "--meta", required=True, help="results/run_config.json: experiment titles and config"
    )
    report.add_argument("--figures", nargs="+", required=True, help="<experiment>/<name>.svg files")
    report.add_argument(
        "--paper-config",
        help="config/paper.yaml: the scope box says what a paper-scale run changes",
    )
    report.add_argument("--data-info", nargs="+", required=True)
    report.add_argument("--runs", nargs="+", required=True, help="result.json of every job")
    report.add_argument("--claims", required=True, help="claims.json from `rankbias claims`")
    report.add_argument("--preflight", default="", help="results/preflight.json")
    report.add_argument(
        "--measured", nargs="*", default=[], help="<experiment>.code.json of every measurement"
    )
    report.add_argument(
        "--statistics",
        nargs="+",
        required=True,
        help="<experiment>.json from `rankbias statistics`",
    )
    report.add_argument(
        "--template-dir", required=True, help="report/templates: the template and text.yaml"
    )
    report.add_argument("--out", required=True)
    report.set_defaults(func=cmd_report)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (data.DataError, ValueError, KeyError, OSError) as error:  # OSError: a full disk, too
        print(f"rankbias {args.step}: error: {error}", file=sys.stderr)
        sys.exit(2)
