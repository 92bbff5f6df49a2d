"""Create, in a throwaway cluster (CD's kind job), every Secret the dev overlay needs, with random
values: the user-created Secrets are listed in k8s/user-secrets.yaml (name -> key -> overlays).

    .venv/bin/python .github/scripts/kind_dev_secrets.py --namespace fraud-dev \
        --export MLFLOW_TRACKING_PASSWORD=mlflow-auth/admin-password ...

* every key whose `overlays` include `dev` gets a value: 32 random bytes in hex, or, for keys
  whose value is a composite (a database URL holding a password), the template in TEMPLATES,
  where `{password:<id>}` is one random password per <id>, shared by every template that names
  it (the PostgreSQL user's password in the postgres Secret and inside MLflow's database URL);
* a key that looks like a URL or URI and has no template is an error that names it: a random
  string is not a usable database URL, and a pod failing on it later is a slower way to learn;
* the Secrets go to `kubectl apply -f -` on stdin (values never on a command line), and each
  value is masked in the job's log (`::add-mask::`) before anything else prints;
* `--export ENV=secret/key` appends the value to $GITHUB_ENV for the job's later steps (the
  MLflow basic-auth credentials for `make run`, the API's admin token for /admin/reload).

Only for kind: production Secrets are created by a person (docs/deploy.md), never generated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
USER_SECRETS = ROOT / "k8s" / "user-secrets.yaml"

#: (secret, key) -> value template, for values that are not a bare random string: URLs that
#: repeat a password of another Secret, and user names. `{password:<id>}` is a generated password
#: (hex: safe inside a URL). Keep in step with k8s/user-secrets.yaml: tests/deploy/
#: test_workflows.py fails on a template for a key that is not listed there.
TEMPLATES: dict[tuple[str, str], str] = {
    # k8s/platform/postgres: one role per service; the URLs below repeat these passwords.
    ("postgres-credentials", "superuser-password"): "{password:postgres-superuser}",
    ("postgres-credentials", "mlflow-password"): "{password:postgres-mlflow}",
    ("postgres-credentials", "prefect-password"): "{password:postgres-prefect}",
    ("postgres-credentials", "fraud-password"): "{password:postgres-fraud}",
    # k8s/platform/mlflow: its stores on that PostgreSQL, and its basic-auth users.
    ("mlflow-server", "backend-store-uri"): (
        "postgresql+psycopg://mlflow:{password:postgres-mlflow}@postgres:5432/mlflow"
    ),
    ("mlflow-server", "auth-database-uri"): (
        "postgresql+psycopg://mlflow:{password:postgres-mlflow}@postgres:5432/mlflow_auth"
    ),
    ("mlflow-server", "admin-username"): "admin",
    ("mlflow-client-credentials", "username"): "fraud-ci",
    # k8s/platform/redis, and the API's backends on the in-cluster servers.
    ("redis-credentials", "password"): "{password:redis}",
    ("fraud-api-secrets", "prediction-log-url"): (
        "postgresql://fraud:{password:postgres-fraud}@postgres:5432/predictions"
    ),
    ("fraud-api-secrets", "feature-store-url"): "redis://:{password:redis}@redis:6379/0",
    # k8s/platform/prefect: its database, and the user:password of its API and UI.
    ("prefect-server", "database-url"): (
        "postgresql+asyncpg://prefect:{password:postgres-prefect}@postgres:5432/prefect"
    ),
    ("prefect-server", "auth-string"): "admin:{password:prefect-auth}",
    # k8s/platform/evidently: an htpasswd line nginx reads ({PLAIN}: a throwaway cluster only).
    ("evidently-auth", "htpasswd"): "admin:{PLAIN}{password:evidently}",
}

PLACEHOLDER = re.compile(r"\{password:([a-z0-9-]+)\}")
LOOKS_LIKE_URL = re.compile(r"(^|-)(url|uri|dsn)$")


class SecretPlanError(ValueError):
    """The dev Secrets cannot be generated; the message names the key to fix."""


def dev_keys(listing: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Secret name -> the keys the dev overlay uses, from user-secrets.yaml's listing."""
    plan: dict[str, list[str]] = {}
    for name, keys in listing.items():
        wanted = [k for k, spec in keys.items() if "dev" in (spec or {}).get("overlays", [])]
        if wanted:
            plan[name] = wanted
    return plan


def generate(
    plan: dict[str, list[str]], templates: dict[tuple[str, str], str]
) -> dict[str, dict[str, str]]:
    """Secret name -> key -> value, random or templated (see the module's docstring)."""
    passwords: dict[str, str] = {}

    def password(m: re.Match[str]) -> str:
        return passwords.setdefault(m[1], secrets.token_hex(24))

    values: dict[str, dict[str, str]] = {}
    for name, keys in plan.items():
        for key in keys:
            template = templates.get((name, key))
            if template is not None:
                value = PLACEHOLDER.sub(password, template)
            elif LOOKS_LIKE_URL.search(key):
                raise SecretPlanError(
                    f"{name}/{key} looks like a URL and has no template: add "
                    f"TEMPLATES[({name!r}, {key!r})] in {Path(__file__).name}"
                )
            else:
                value = secrets.token_hex(32)
            values.setdefault(name, {})[key] = value
    return values


def manifests(values: dict[str, dict[str, str]], namespace: str) -> dict[str, Any]:
    """A List of Secret objects (stringData), for `kubectl apply -f -`."""
    items = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": data,
        }
        for name, data in values.items()
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--user-secrets", type=Path, default=USER_SECRETS)
    parser.add_argument("--export", action="append", default=[], metavar="ENV=SECRET/KEY")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (names and keys), apply nothing"
    )
    args = parser.parse_args(argv)

    plan = dev_keys(yaml.safe_load(args.user_secrets.read_text()) or {})
    try:
        values = generate(plan, TEMPLATES)
        exports = []
        for spec in args.export:
            env, _, ref = spec.partition("=")
            name, _, key = ref.partition("/")
            if key not in values.get(name, {}):
                raise SecretPlanError(f"--export {spec}: the dev overlay has no Secret key {ref}")
            exports.append((env, values[name][key]))
    except SecretPlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for name, keys in plan.items():
            print(f"{name}: {', '.join(keys)}")
        return 0
    for data in values.values():
        for value in data.values():
            print(f"::add-mask::{value}", flush=True)
    doc = json.dumps(manifests(values, args.namespace))
    subprocess.run(["kubectl", "apply", "-f", "-"], input=doc, text=True, check=True)
    github_env = os.environ.get("GITHUB_ENV")
    if exports and not github_env:
        print("error: --export needs GITHUB_ENV (a GitHub Actions step)", file=sys.stderr)
        return 2
    if github_env:
        with open(github_env, "a") as f:
            f.writelines(f"{env}={value}\n" for env, value in exports)
    for name, keys in plan.items():
        print(f"created {args.namespace}/{name}: {', '.join(keys)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
