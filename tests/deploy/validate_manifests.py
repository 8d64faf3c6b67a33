#!/usr/bin/env python3
"""Checks the Kubernetes manifests in deploy/kubernetes/ without a cluster.

Every YAML document is checked against the models of the official `kubernetes` Python client
(generated from the API's OpenAPI schema), strictly: a field the model does not have, a value
of the wrong type, or a required field left out is a problem. The OpenTelemetry Collector
configs held in ConfigMaps are parsed too: every pipeline must name components the config
defines, and the `loadbalancing` exporter must be there, configured with its documented keys.
oxeye's DaemonSet must keep its least-privilege settings.

    validate_manifests.py [FILE...]     # default: deploy/kubernetes/*.yaml
    validate_manifests.py --self-test   # broken copies of the manifests must be rejected

Prints one line per problem and exits 1 if there is any.
"""

import argparse
import copy
import pathlib
import re
import sys

import kubernetes.client as k8s
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"

# (apiVersion, kind) -> the client's model class.
MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("v1", "Secret"): "V1Secret",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

# Type strings of the generated models: `list[X]`/`dict(str, X)` (before client 35) or
# `List[X]`/`Dict[str, X]`.
LIST_TYPE = re.compile(r"^[Ll]ist\[(.+)\]$")
DICT_TYPE = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")


class Invalid(Exception):
    """A value that was reported as a problem; its parents are not built."""


def json_path(path, key):
    return f"{path}.{key}" if path else key


def check(value, type_name, path, problems):
    """Checks `value` against the model type `type_name` and returns it as the client would hold
    it (a model instance for an object); raises Invalid after recording a problem."""
    if value is None:
        return None
    if match := LIST_TYPE.match(type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, found {type(value).__name__}")
            raise Invalid
        return check_all([(f"{path}[{i}]", item) for i, item in enumerate(value)], match[1], problems, list)
    if match := DICT_TYPE.match(type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map, found {type(value).__name__}")
            raise Invalid
        return check_all([(json_path(path, key), item) for key, item in value.items()], match[1] or match[2], problems, dict, value.keys())
    primitive = {
        "str": (str,),
        "bytes": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
        "date": (str,),
    }
    if type_name == "object":
        return value
    if type_name in primitive:
        wanted = primitive[type_name]
        # YAML's `yes`/`true` are bools, and bool is an int in Python: keep them apart.
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
            problems.append(f"{path}: expected {type_name}, found {type(value).__name__} {value!r}")
            raise Invalid
        return value
    return check_model(value, type_name, path, problems)


def check_all(items, type_name, problems, container, keys=None):
    built, failed = [], False
    for item_path, item in items:
        try:
            built.append(check(item, type_name, item_path, problems))
        except Invalid:
            failed = True
    if failed:
        raise Invalid
    return dict(zip(keys, built)) if container is dict else built


def check_model(value, type_name, path, problems):
    model = getattr(k8s, type_name, None)
    if model is None or not hasattr(model, "openapi_types"):
        problems.append(f"{path}: the client has no model {type_name}")
        raise Invalid
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({type_name}), found {type(value).__name__}")
        raise Invalid
    by_json_name = {json_name: attr for attr, json_name in model.attribute_map.items()}
    kwargs, failed = {}, False
    for key, item in value.items():
        attr = by_json_name.get(key)
        if attr is None:
            problems.append(f"unknown field {json_path(path, key)}")
            failed = True
            continue
        try:
            built = check(item, model.openapi_types[attr], json_path(path, key), problems)
        except Invalid:
            failed = True
            continue
        if built is not None:
            kwargs[attr] = built
    if failed:
        raise Invalid
    missing = [model.attribute_map[attr] for attr in required_fields(model) if attr not in kwargs]
    if missing:
        for field in missing:
            problems.append(f"missing required field {json_path(path, field)}")
        raise Invalid
    # The client's own validation: client_side_validation is on by default, so the generated
    # setters (or the pydantic models of newer clients) refuse what is left.
    try:
        return model(**kwargs)
    except (ValueError, TypeError) as error:
        if hasattr(error, "errors"):  # pydantic's ValidationError: say which field and why
            reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        else:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        problems.append(f"{path or type_name}: {type_name} refuses it: {reason}")
        raise Invalid


def required_fields(model):
    """The model's required attributes, where the client says which they are (pydantic models);
    older clients refuse a missing one when the model is constructed."""
    fields = getattr(model, "model_fields", None)
    if fields is None:
        return []
    return [name for name, field in fields.items() if field.is_required()]


def check_document(doc, problems):
    """Checks one manifest; returns (kind, name) for messages."""
    if not isinstance(doc, dict):
        problems.append(f"a document is a {type(doc).__name__}, not a Kubernetes object")
        return None
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    name = (doc.get("metadata") or {}).get("name")
    model = MODELS.get((api_version, kind))
    if model is None:
        problems.append(f"no model for apiVersion {api_version!r} kind {kind!r} (known: {sorted(MODELS)})")
        return kind, name
    if not name:
        problems.append("missing metadata.name")
    if kind not in CLUSTER_SCOPED and not (doc.get("metadata") or {}).get("namespace"):
        problems.append("missing metadata.namespace (it would land in whatever namespace kubectl uses)")
    try:
        check(doc, model, "", problems)
    except Invalid:
        pass
    return kind, name


# The loadbalancing exporter's documented keys (exporter/loadbalancingexporter: config.go,
# config.schema.yaml and README.md in opentelemetry-collector-contrib).
LOADBALANCING_KEYS = {"protocol", "resolver", "routing_key", "routing_attributes", "sending_queue", "timeout", "retry_on_failure"}
LOADBALANCING_RESOLVERS = {
    "static": {"hostnames"},
    "dns": {"hostname", "port", "interval", "timeout"},
    "k8s": {"service", "ports", "timeout", "return_hostnames"},
    "aws_cloud_map": {"namespace", "service_name", "port", "health_status", "interval", "timeout"},
}
ROUTING_KEYS = {"service", "traceID", "metric", "resource", "streamID", "attributes"}
SIGNALS = {"traces", "metrics", "logs", "profiles"}


def component_type(name):
    return name.split("/", 1)[0]


def check_collector_config(config, problems):
    """Checks one collector config; returns (has a loadbalancing exporter, has a profiles pipeline)."""
    sections = {}
    for section in ("receivers", "processors", "exporters", "connectors", "extensions"):
        defined = config.get(section) or {}
        if not isinstance(defined, dict):
            problems.append(f"{section}: expected a map of components")
            defined = {}
        sections[section] = defined
    service = config.get("service") or {}
    for extension in service.get("extensions") or []:
        if extension not in sections["extensions"]:
            problems.append(f"service.extensions names {extension!r}, which extensions does not define")
    connectors = set(sections["connectors"])
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines is empty")
    profiles = False
    loadbalancing_used = False
    for pipeline, parts in pipelines.items():
        signal = component_type(pipeline)
        if signal not in SIGNALS:
            problems.append(f"pipeline {pipeline}: unknown signal {signal!r} (one of {sorted(SIGNALS)})")
        profiles |= signal == "profiles"
        parts = parts or {}
        for key in parts:
            if key not in ("receivers", "processors", "exporters"):
                problems.append(f"pipeline {pipeline}: unknown key {key!r}")
        for role, section, also in (("receivers", "receivers", connectors), ("processors", "processors", set()), ("exporters", "exporters", connectors)):
            names = parts.get(role) or []
            if role != "processors" and not names:
                problems.append(f"pipeline {pipeline}: no {role}")
            for name in names:
                if name not in sections[section] and name not in also:
                    problems.append(f"pipeline {pipeline}: {role} names {name!r}, which {section} does not define")
        for name in parts.get("exporters") or []:
            if component_type(name) != "loadbalancing" or name not in sections["exporters"]:
                continue
            loadbalancing_used = True
            routing_key = (sections["exporters"][name] or {}).get("routing_key", "traceID")
            if signal == "profiles":
                problems.append(f"pipeline {pipeline}: the loadbalancing exporter takes traces, metrics and logs, not profiles")
            if signal == "metrics" and routing_key == "traceID":
                problems.append(f"pipeline {pipeline}: routing_key traceID cannot route metrics")
    has_loadbalancing = False
    for name, settings in sections["exporters"].items():
        if component_type(name) == "loadbalancing":
            has_loadbalancing = True
            check_loadbalancing(name, settings or {}, problems)
    if has_loadbalancing and not loadbalancing_used:
        problems.append("the loadbalancing exporter is defined but no pipeline uses it")
    return has_loadbalancing, profiles


def check_loadbalancing(name, settings, problems):
    where = f"exporters.{name}"
    for key in settings:
        if key not in LOADBALANCING_KEYS:
            problems.append(f"{where}: unknown key {key!r}")
    if settings.get("routing_key", "traceID") not in ROUTING_KEYS:
        problems.append(f"{where}.routing_key: {settings['routing_key']!r} is not one of {sorted(ROUTING_KEYS)}")
    protocol = settings.get("protocol") or {}
    if set(protocol) != {"otlp"}:
        problems.append(f"{where}.protocol: must hold exactly `otlp`, found {sorted(protocol)}")
    elif "endpoint" in (protocol["otlp"] or {}):
        problems.append(f"{where}.protocol.otlp.endpoint: must not be set (the resolver gives each backend's)")
    resolver = settings.get("resolver") or {}
    if len(resolver) != 1 or next(iter(resolver)) not in LOADBALANCING_RESOLVERS:
        problems.append(f"{where}.resolver: needs exactly one of {sorted(LOADBALANCING_RESOLVERS)}, found {sorted(resolver)}")
        return
    kind, options = next(iter(resolver.items()))
    options = options or {}
    for key in options:
        if key not in LOADBALANCING_RESOLVERS[kind]:
            problems.append(f"{where}.resolver.{kind}: unknown key {key!r}")
    required = {"static": "hostnames", "dns": "hostname", "k8s": "service"}.get(kind)
    if required and not options.get(required):
        problems.append(f"{where}.resolver.{kind}.{required}: required")


def check_collectors(entries):
    """Checks the collector configs in the ConfigMaps of `entries` (adding to each entry's
    problems); returns whether one of them has a loadbalancing exporter."""
    found_loadbalancing = False
    needs_profiles_gate = set()
    for entry in entries:
        doc = entry.doc
        if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
            continue
        for key, text in (doc.get("data") or {}).items():
            if not key.endswith((".yaml", ".yml")) or not isinstance(text, str):
                continue
            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError as error:
                entry.problems.append(f"data.{key}: not YAML: {error}")
                continue
            if not isinstance(config, dict) or "service" not in config:
                continue
            config_problems = []
            has_loadbalancing, profiles = check_collector_config(config, config_problems)
            entry.problems.extend(f"data.{key}: {problem}" for problem in config_problems)
            found_loadbalancing |= has_loadbalancing
            if profiles:
                needs_profiles_gate.add((doc.get("metadata") or {}).get("name"))
    # A collector that runs a profiles pipeline needs the feature gate on its command line.
    for entry in entries:
        doc = entry.doc
        if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "DaemonSet", "StatefulSet"):
            continue
        pod = (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
        mounted = {(volume.get("configMap") or {}).get("name") for volume in pod.get("volumes") or []}
        for config_map in sorted(mounted & needs_profiles_gate):
            args = [arg for container in pod.get("containers") or [] for arg in (container.get("args") or [])]
            gates = ",".join(arg.split("=", 1)[1] for arg in args if arg.startswith("--feature-gates="))
            if "service.profilesSupport" not in gates.split(","):
                entry.problems.append(f"runs ConfigMap {config_map}'s profiles pipeline without --feature-gates=service.profilesSupport")
    return found_loadbalancing


def check_oxeye_daemonset(doc, problems):
    """The least-privilege settings oxeye's DaemonSet must keep."""
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    if pod.get("hostPID") is not True:
        problems.append("spec.template.spec.hostPID must be true (oxeye reads the host's /proc)")
    for container in pod.get("containers") or []:
        context = container.get("securityContext") or {}
        where = f"container {container.get('name')}"
        if context.get("privileged"):
            problems.append(f"{where}: privileged: the capabilities are enough")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities.drop must hold ALL")
        if "SYS_ADMIN" in (capabilities.get("add") or []):
            problems.append(f"{where}: SYS_ADMIN is only for kernels older than 5.8")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem must be true")


def load(path, problems):
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except (OSError, yaml.YAMLError) as error:
        problems.append(f"{rel(path)}: {error}")
        return []


def rel(path):
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


class Entry:
    """One document of one file, and its problems."""

    def __init__(self, path, doc):
        self.path, self.doc, self.problems = path, doc, []
        self.kind_name = check_document(doc, self.problems)
        if self.kind_name == ("DaemonSet", "oxeye") and not self.problems:
            check_oxeye_daemonset(doc, self.problems)

    def lines(self):
        label = "/".join(str(part) for part in self.kind_name) if self.kind_name else "?"
        return [f"{rel(self.path)}: {label}: {problem}" for problem in self.problems]


def validate_all(files):
    """All problems of `files` as `file: kind/name: problem` lines, the number of documents, and
    whether a collector config has a loadbalancing exporter."""
    lines, entries = [], []
    for path in files:
        entries.extend(Entry(path, doc) for doc in load(path, lines))
    found_loadbalancing = check_collectors(entries)
    for entry in entries:
        lines.extend(entry.lines())
    return lines, len(entries), found_loadbalancing


def self_test(files):
    """Each broken copy must be rejected with the expected line, and the originals accepted."""
    lines, _, _ = validate_all(files)
    if lines:
        return [f"self-test: the manifests themselves are rejected: {line}" for line in lines]
    daemonset_file = MANIFESTS / "oxeye-daemonset.yaml"
    docs = load(daemonset_file, [])
    daemonset = next(doc for doc in docs if doc.get("kind") == "DaemonSet")

    def broken(change):
        doc = copy.deepcopy(daemonset)
        change(doc)
        problems = []
        check_document(doc, problems)
        if not problems:
            check_oxeye_daemonset(doc, problems)
        return problems

    pod = lambda doc: doc["spec"]["template"]["spec"]  # noqa: E731
    container = lambda doc: pod(doc)["containers"][0]  # noqa: E731
    cases = [
        ("unknown field", lambda doc: pod(doc).__setitem__("hostPIDD", True), "unknown field spec.template.spec.hostPIDD"),
        ("unknown nested field", lambda doc: container(doc)["securityContext"].__setitem__("capability", {}), "unknown field spec.template.spec.containers[0].securityContext.capability"),
        ("wrong type", lambda doc: pod(doc).__setitem__("hostPID", "yes"), "spec.template.spec.hostPID: expected bool"),
        ("int for a string", lambda doc: container(doc)["resources"]["limits"].__setitem__("cpu", 1), "spec.template.spec.containers[0].resources.limits.cpu: expected str"),
        ("missing required field", lambda doc: container(doc).pop("name"), "spec.template.spec.containers[0].name"),
        ("privileged", lambda doc: container(doc)["securityContext"].__setitem__("privileged", True), "privileged"),
    ]
    failures = []
    for what, change, expected in cases:
        problems = broken(change)
        if not any(expected in problem for problem in problems):
            failures.append(f"self-test: {what}: expected a problem with {expected!r}, got {problems}")
        else:
            print(f"self-test: {what}: rejected: {next(p for p in problems if expected in p)}")
    config = {
        "receivers": {"otlp": {}},
        "exporters": {"loadbalancing": {"protocol": {"otlp": {}}, "resolver": {"k8s": {"service": "x.y"}}}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["loadbalancing", "otlp/nowhere"]}}},
    }
    problems = []
    check_collector_config(config, problems)
    if not any("otlp/nowhere" in problem for problem in problems):
        failures.append(f"self-test: collector pipeline naming an undefined exporter: accepted ({problems})")
    else:
        print(f"self-test: undefined exporter: rejected: {problems[0]}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="check that broken copies of the manifests are rejected")
    parser.add_argument("files", nargs="*", type=pathlib.Path, help="manifests (default: deploy/kubernetes/*.yaml)")
    args = parser.parse_args()
    files = args.files or sorted(MANIFESTS.glob("*.yaml"))
    if not files:
        print(f"no manifests in {MANIFESTS}", file=sys.stderr)
        return 1
    if args.self_test:
        failures = self_test(files)
        for line in failures:
            print(line, file=sys.stderr)
        return 1 if failures else 0
    lines, count, found_loadbalancing = validate_all(files)
    if not found_loadbalancing and not args.files:
        lines.append("no collector config has a loadbalancing exporter")
    for line in lines:
        print(line, file=sys.stderr)
    if lines:
        return 1
    print(f"ok: {count} documents in {len(files)} files match the Kubernetes API models (client {k8s.__version__ if hasattr(k8s, '__version__') else '?'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
