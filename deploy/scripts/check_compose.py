#!/usr/bin/env python3
"""Offline checks of deploy/compose.yaml (checkov has no Compose framework, and no Docker
engine runs in CI): the services the product needs are there, the entra-sync containers run
hardened (non-root, read-only, no capabilities, no privilege escalation), every secret is a
file (no secret-looking value in an environment), every `*_FILE` variable points at a secret
mounted into that service, and every variable is one the binary reads (a typo fails here,
not in production). Prints each problem and exits 1 when there is one."""

import re
import sys

import yaml

# The variables entra-sync reads (SPEC §8 names, their `*_FILE` forms, and the prefixes).
KNOWN = {
    "DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE",
    "ENTRA_SYNC_LISTEN", "ENTRA_SYNC_MASTER_KEY", "ENTRA_SYNC_ENCRYPTION_KEY",
    "MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET", "MICROSOFT_TENANT_ID",
    "MICROSOFT_OAUTH_CALLBACK_URL", "MICROSOFT_LOGIN_BASE_URL", "MICROSOFT_GRAPH_BASE_URL",
    "ENTRA_SYNC_LOG_FORMAT", "RUST_LOG", "VAULT_ADDR",
}
# `OTEL_*`: the standard OpenTelemetry variables, read by `serve` and `worker` (traces).
KNOWN_PREFIXES = ("ENTRA_SYNC__", "OTEL_")
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|PWD|TOKEN|MASTER_KEY|ENCRYPTION_KEY|DATABASE_URL)")


def main(path):
    with open(path, encoding="utf-8") as handle:
        compose = yaml.safe_load(handle)
    problems = []
    services = compose.get("services", {})
    declared = compose.get("secrets", {})
    for name in ("postgres", "temporal", "migrate", "api", "worker"):
        if name not in services:
            problems.append(f"service {name} is missing")
    for name, secret in declared.items():
        if "file" not in secret:
            problems.append(f"secret {name} is not read from a file")
    for name, service in services.items():
        environment = service.get("environment", {}) or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        mounted = set()
        for secret in service.get("secrets", []) or []:
            source = secret if isinstance(secret, str) else secret.get("source")
            if source not in declared:
                problems.append(f"{name}: secret {source} is not declared")
            mounted.add(source if isinstance(secret, str) else secret.get("target", source))
        for variable, value in environment.items():
            if variable.endswith("_FILE"):
                target = str(value).removeprefix("/run/secrets/")
                if target not in mounted:
                    problems.append(f"{name}: {variable} points at {value}, not a mounted secret")
            elif SECRET_NAME.search(variable) and not variable.endswith("__DIRECTORY"):
                problems.append(f"{name}: {variable} is a secret in the environment; use a file")
        if not str(service.get("image", "")).startswith("${ENTRA_SYNC_IMAGE"):
            continue
        for variable in environment:
            base = variable.removesuffix("_FILE")
            if base not in KNOWN and not base.startswith(KNOWN_PREFIXES):
                problems.append(f"{name}: entra-sync does not read {variable}")
        if service.get("read_only") is not True:
            problems.append(f"{name}: root filesystem is not read-only")
        if "ALL" not in (service.get("cap_drop") or []):
            problems.append(f"{name}: capabilities are not dropped")
        if "no-new-privileges:true" not in (service.get("security_opt") or []):
            problems.append(f"{name}: privilege escalation is not prevented")
        user = str(service.get("user", "0")).split(":")[0]
        if user in ("0", "root", ""):
            problems.append(f"{name}: runs as root")
        command = service.get("command") or []
        if command[:1] != ["migrate"]:
            if "healthcheck" not in service or service["healthcheck"].get("disable"):
                problems.append(f"{name}: no healthcheck")
            depends = service.get("depends_on", {})
            if depends.get("migrate", {}).get("condition") != "service_completed_successfully":
                problems.append(f"{name}: does not wait for the migration job")
    worker = services.get("worker", {})
    if (worker.get("deploy") or {}).get("replicas", 1) < 2:
        problems.append("worker: fewer than two replicas")
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: {len(services)} services, {len(declared)} file secrets: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy/compose.yaml"))
