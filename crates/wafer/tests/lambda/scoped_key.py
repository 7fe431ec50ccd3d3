"""boto3 signing with a wafer API key: its id as the access key id, its secret as the secret key.

    python scoped_key.py URL KEY_ID SECRET

The key's scope is `invoke:echo`; the server also holds `other`. Every check raises on failure.
"""

import json
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

url, key_id, secret = sys.argv[1:4]


def client(secret=secret):
    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("the call did not fail")


aws = client()
answer = aws.invoke(FunctionName="echo", Payload=json.dumps({"via": "key"}))
check(answer["StatusCode"] == 200, "the key invokes the function its scope names")
code = error_code(lambda: aws.invoke(FunctionName="other", Payload=b"{}"))
check(code == ("AccessDeniedException", 403), f"and no other: {code}")
listed = aws.list_functions()["Functions"]
check(listed == [], f"it reads none of them: {listed}")
code = error_code(lambda: client(secret="not-the-secret").invoke(FunctionName="echo", Payload=b"{}"))
check(code[0] == "InvalidSignatureException", f"a wrong secret is refused: {code}")
