"""What the Lambda client scripts share: a boto3 Lambda client for a wafer server, and checks."""

import boto3
import botocore.config
from botocore.exceptions import ClientError


def lambda_client(url, access_key, secret, region):
    """A boto3 Lambda client signing with `access_key` and `secret`, without retries."""
    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


def error_code(call):
    """The error code and HTTP status of a call that must fail."""
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("the call did not fail")
