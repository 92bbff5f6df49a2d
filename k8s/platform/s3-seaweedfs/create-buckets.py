"""Create the S3 buckets the platform needs, if missing (the Job `s3-create-buckets`).

Idempotent: run at every `kubectl apply` (the Job is deleted after it finishes, so the next apply
runs it again) and harmless when the buckets exist. Waits for the store to answer first, since
the Job and the store start together.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

WAIT_SECONDS = 300


def main() -> int:
    endpoint = os.environ["S3_ENDPOINT_URL"]
    buckets = os.environ["S3_BUCKETS"].split()
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                print(f"create-buckets: {endpoint} did not answer in {WAIT_SECONDS} s: {exc}")
                return 1
            time.sleep(5)
    for bucket in buckets:
        if bucket in existing:
            print(f"create-buckets: s3://{bucket} exists")
        else:
            s3.create_bucket(Bucket=bucket)
            print(f"create-buckets: created s3://{bucket}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
