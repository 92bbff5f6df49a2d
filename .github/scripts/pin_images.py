"""Write a kustomization that deploys an overlay with its images replaced by pushed ones.

    python .github/scripts/pin_images.py --overlay k8s/overlays/prod --out "$RUNNER_TEMP/deploy" \
        fraud-api=ghcr.io/acme/fraud-api@sha256:<digest> \
        fraud-platform=ghcr.io/acme/fraud-platform@sha256:<digest>
    kubectl apply -k "$RUNNER_TEMP/deploy"

Why a wrapper instead of `kustomize edit set image` in a copy of k8s/: kubectl's built-in
kustomize renders it (no second kustomize binary to pin), the repository's files are never
changed, and the overlay is used as it is. The wrapper's `images:` transformer runs after the
overlay's, matching the image *name* the manifests use (`fraud-api`, `fraud-platform`) whatever
tag the overlay set. A reference is `name:tag` or `name@sha256:<64 hex>` (prod: by digest);
`latest` and untagged references are refused, as in k8s/.

Standard library only (the deploy job runs it with the runner's python3). The file is JSON,
which is YAML, so kustomize reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

DIGEST = re.compile(r"^(?P<name>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")
TAGGED = re.compile(r"^(?P<name>[^@\s]+?):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")


class ImageRefError(ValueError):
    """An image override that cannot be deployed; the message names it."""


def image_entry(spec: str) -> dict[str, str]:
    """`fraud-api=ghcr.io/o/fraud-api@sha256:...` -> a kustomize `images:` entry."""
    name, sep, ref = spec.partition("=")
    if not sep or not name or not ref:
        raise ImageRefError(f"{spec!r}: expected NAME=REFERENCE, e.g. fraud-api=ghcr.io/o/x:1.0")
    if m := DIGEST.match(ref):
        return {"name": name, "newName": m["name"], "digest": m["digest"]}
    m = TAGGED.match(ref)
    # A ':' inside the last path segment is a tag; one before a '/' is a registry port.
    if m is None or "/" in m["tag"]:
        raise ImageRefError(
            f"{spec!r}: {ref} has no tag or digest (never deploy an implicit latest)"
        )
    if m["tag"] == "latest":
        raise ImageRefError(
            f"{spec!r}: the tag 'latest' is not deployable (pin a version or digest)"
        )
    return {"name": name, "newName": m["name"], "newTag": m["tag"]}


def wrapper(overlay: Path, out: Path, images: list[str]) -> dict[str, object]:
    """The wrapper kustomization written in `out`: the overlay with `images` overridden."""
    if not (overlay / "kustomization.yaml").is_file():
        raise ImageRefError(f"{overlay} has no kustomization.yaml")
    entries = [image_entry(s) for s in images]
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ImageRefError(f"an image is given twice: {', '.join(names)}")
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # Relative: kustomize refuses an absolute path as a resource ("cannot be absolute").
        "resources": [os.path.relpath(overlay.resolve(), out.resolve())],
        "images": entries,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlay", type=Path, required=True, help="e.g. k8s/overlays/dev")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("images", nargs="+", help="NAME=REFERENCE, e.g. fraud-api=ghcr.io/o/x:t")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        doc = wrapper(args.overlay, args.out, args.images)
    except ImageRefError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = args.out / "kustomization.yaml"
    target.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {target}: {args.overlay} with " + ", ".join(args.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
