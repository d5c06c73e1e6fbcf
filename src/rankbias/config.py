"""Config and registry validation with messages a user can act on, before any job runs.

JSON-schema errors are raw ("-0.1 is not valid under any of the given schemas"); here each is
reduced to its most specific cause and printed as `file: key.path: what is wrong; allowed: ...`.
Checks the schema cannot express (a run naming an undefined data set, a teacher rank above its
dimensions, a claim rule naming a missing experiment or metric) follow in plan and claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError


class ConfigError(ValueError):
    """A config or claim registry is malformed; the message names the file, key and remedy."""


def read_yaml(path: str | Path, what: str) -> dict:
    """A YAML mapping from `path`; `what` names the setting that pointed at it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: {path} does not exist")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, found {type(document).__name__}")
    return document


def key_path(path) -> str:
    """experiments.tiny.runs[0].weight_decay[1] from a jsonschema path deque."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def allowed(schema: dict, root: dict) -> str:
    """What a schema node accepts, in words (for the message's `allowed:` part)."""
    while "$ref" in schema:  # "#/$defs/name"
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "const" in schema:
        return repr(schema["const"])
    if schema.get("type") == "object":
        size = "a non-empty" if schema.get("minProperties") else "a"
        keys = f" with keys {', '.join(schema['properties'])}" if "properties" in schema else ""
        return f"{size} mapping{keys}"
    if "oneOf" in schema or "anyOf" in schema:
        options = schema.get("oneOf", schema.get("anyOf"))
        return " or ".join(allowed(option, root) for option in options)
    kind = schema.get("type")
    kinds = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array":
        items = allowed(schema.get("items", {}), root)
        size = " non-empty" if schema.get("minItems") else ""
        unique = " distinct" if schema.get("uniqueItems") else ""
        return f"a{size} list of{unique} {items}".replace("  ", " ")
    bounds = []
    for key, sign in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            bounds.append(f"{sign} {schema[key]}")
    if "pattern" in schema:
        bounds.append(f"matching {schema['pattern']}")
    text = f"{kinds or 'a value'}{' ' + ' and '.join(bounds) if bounds else ''}"
    return text


def most_specific(error: ValidationError) -> ValidationError:
    """Descend into oneOf/anyOf alternatives to the cause a user can fix: an alternative whose
    type matched (a list with one bad item), else the choice itself (no alternative matched)."""
    while error.context and not (error.validator == "oneOf" and isinstance(error.instance, dict)):
        matched_type = [cause for cause in error.context if cause.validator != "type"]
        if not matched_type:
            return error
        error = max(matched_type, key=lambda cause: len(cause.absolute_path))
    return error


def error_text(error: ValidationError, source: str, root: dict) -> str:
    """One line: file, key path, what is wrong, what is allowed."""
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        for extra in sorted(set(error.instance) - set(known)):
            key = extra if where == "(top level)" else f"{where}.{extra}"
            return f"{source}: {key}: unknown key; allowed keys here: {', '.join(known) or 'none'}"
    if error.validator == "required":
        return f"{source}: {where}: {error.message}"
    if error.validator == "oneOf" and isinstance(error.instance, dict):  # runs: epochs xor steps
        names = " or ".join("/".join(o.get("required", [])) for o in error.validator_value)
        return f"{source}: {where}: give exactly one of {names}"
    if error.validator in ("oneOf", "anyOf"):
        what = allowed(error.schema, root)
        return f"{source}: {where}: {error.instance!r} is not valid; allowed: {what}"
    return f"{source}: {where}: {error.message}; allowed: {allowed(error.schema, root)}"


def check_schema(document: Any, schema_path: str | Path, source: str) -> None:
    """Raise ConfigError listing every schema violation of `document`, most specific causes."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
    if errors:
        lines = [error_text(most_specific(error), source, schema) for error in errors]
        raise ConfigError("\n".join(dict.fromkeys(lines)))


def planned_shapes(config: dict, source: str) -> dict[str, tuple[int, int, int, int]]:
    """Every data set's shape before it is prepared; a user's table is read (and checked) now,
    so a bad one is refused before any job, by file, column and row."""
    from rankbias import plan
    from rankbias.data import DataError, planned_shape

    shapes = {}
    for name, spec in config["datasets"].items():
        manifest = plan.raw_manifest(config, name)
        try:
            shapes[name] = planned_shape(spec, Path(manifest).parent if manifest else None)
        except DataError as error:
            raise ConfigError(f"{source}: datasets.{name}: {error}") from None
    return shapes


def check_config(
    config: dict,
    schemas: str | Path,
    source: str,
    claims_path: str | Path,
    user_claims_path: str | Path = "",
) -> tuple[dict, dict, dict]:
    """Everything the workflow checks at parse time, in order; returns the jobs, the claim
    registry (the papers' and the user's, combined) and every data set's planned shape.

    Fills the schema's defaults into `config` (Snakemake's `validate`, as catalog workflows do)
    only after our own check has passed, so its terse messages are never the ones a user sees.
    """
    from snakemake.utils import validate  # the schema's defaults, filled as Snakemake does

    from rankbias import memory, plan
    from rankbias.registry import ClaimError, check_registry, combined_registry

    schemas = Path(schemas)
    check_schema(config, schemas / "config.schema.yaml", source)
    validate(config, str(schemas / "config.schema.yaml"))
    try:
        plan.select_experiments(config, source)
        jobs = plan.jobs(config, source)
        shapes = planned_shapes(config, source)
        limit = config.get("max_mem_mb") or memory.machine_mb()
        memory.check_fits(jobs, shapes, limit, source)
        registries = []
        for path, key in ((claims_path, "claims_file"), (user_claims_path, "user_claims_file")):
            if path:
                document = read_yaml(path, f"{source}: {key}")
                check_schema(document, schemas / "claims.schema.yaml", str(path))
                validate(document, str(schemas / "claims.schema.yaml"))
                registries.append(document)
        user = registries[1] if user_claims_path else None
        registry = combined_registry(registries[0], user, str(claims_path), str(user_claims_path))
        check_registry(registry, config, str(claims_path), source)
    except (plan.PlanError, memory.MemoryPlanError, ClaimError) as error:
        raise ConfigError(str(error)) from None
    return jobs, registry, shapes
