"""Lambda clients against a wafer server, unchanged: boto3 and the AWS CLI.

    python clients.py URL ACCESS_KEY SECRET_KEY

The server holds `echo` (version 1 live: a WAGI guest that logs a line and echoes its body; version 2,
a candidate answering "version 2", aliased `beta`) and `broken` (a guest that traps). Every check
raises on failure; the exit code says whether all passed. What the AWS CLI prints is printed too.
"""

import base64
import json
import os
import subprocess
import sys

from checks import check, error_code, lambda_client

url, access_key, secret_key = sys.argv[1:4]


def client(secret=secret_key, region="eu-central-1"):
    return lambda_client(url, access_key, secret, region)


aws = client()

# A synchronous call: the payload is the body, the answer the payload.
answer = aws.invoke(FunctionName="echo", Payload=json.dumps({"hello": "sdk"}))
payload = answer["Payload"].read().decode()
check(answer["StatusCode"] == 200, "RequestResponse answers 200")
check(payload == 'ok on attempt 1: {"hello": "sdk"}\n', f"the payload comes back: {payload!r}")
check(answer["ExecutedVersion"] == "1", "the live version ran")
check("FunctionError" not in answer, "no function error")

# The log tail.
answer = aws.invoke(FunctionName="echo", Payload=b"{}", LogType="Tail")
tail = base64.b64decode(answer["LogResult"]).decode()
check("attempt 1" in tail, f"the log tail holds the guest's line: {tail!r}")

# Qualifiers: a version, an alias, a qualified name and an ARN.
for kwargs in (
    {"FunctionName": "echo", "Qualifier": "2"},
    {"FunctionName": "echo", "Qualifier": "beta"},
    {"FunctionName": "echo:beta"},
    {"FunctionName": "arn:aws:lambda:eu-central-1:123456789012:function:echo:2"},
):
    answer = aws.invoke(Payload=b"{}", **kwargs)
    check(
        answer["ExecutedVersion"] == "2" and answer["Payload"].read() == b"version 2",
        f"{kwargs} runs version 2",
    )

# Event queues it; DryRun only checks.
check(aws.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202,
      "Event answers 202")
check(aws.invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204,
      "DryRun answers 204")

# A function that fails is a function error, with Lambda's error payload.
answer = aws.invoke(FunctionName="broken", Payload=b"{}")
error = json.loads(answer["Payload"].read())
check(answer["StatusCode"] == 200 and answer.get("FunctionError") == "Unhandled",
      "a trap is an Unhandled function error")
check("errorMessage" in error and "errorType" in error, f"the error payload: {error}")

# Lambda's errors: an unknown function, a wrong secret, an unknown key.
check(error_code(lambda: aws.invoke(FunctionName="nobody"))
      == ("ResourceNotFoundException", 404), "an unknown function is ResourceNotFoundException")
check(error_code(lambda: client(secret="wrong").invoke(FunctionName="echo"))
      == ("InvalidSignatureException", 403), "a wrong secret is refused with 403")

# Listing and getting.
names = sorted(f["FunctionName"] for f in aws.list_functions()["Functions"])
check(names == ["broken", "echo"], f"list_functions: {names}")
got = aws.get_function(FunctionName="echo")["Configuration"]
check(got["FunctionName"] == "echo" and got["Version"] == "1", f"get_function: {got['FunctionArn']}")

# The AWS CLI, as it is.
env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key,
           AWS_DEFAULT_REGION="us-west-2")
cli = os.path.join(os.path.dirname(sys.executable), "aws")
out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"wafer-lambda-{os.getpid()}.json")
for args in (
    ["lambda", "invoke", "--function-name", "echo", "--payload", '{"from": "cli"}', out],
    ["lambda", "list-functions"],
):
    run = subprocess.run([cli, "--endpoint-url", url, *args], env=env, capture_output=True, text=True)
    print(f"$ aws {' '.join(args)}\n{run.stdout}{run.stderr}", end="")
    check(run.returncode == 0, f"aws {args[1]} succeeds")
with open(out) as f:
    written = f.read()
os.remove(out)
check(written == 'ok on attempt 1: {"from": "cli"}\n', f"aws lambda invoke wrote the payload: {written!r}")
print("all Lambda client checks passed")
