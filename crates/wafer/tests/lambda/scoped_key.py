"""boto3 signing with a wafer API key: its id as the access key id, its secret as the secret key.

    python scoped_key.py URL KEY_ID SECRET

The key's scope is `invoke:echo`; the server also holds `other`. Every check raises on failure.
"""

import json
import sys

from checks import check, error_code, lambda_client

url, key_id, secret = sys.argv[1:4]


def client(secret=secret):
    return lambda_client(url, key_id, secret, "us-east-1")


aws = client()
answer = aws.invoke(FunctionName="echo", Payload=json.dumps({"via": "key"}))
check(answer["StatusCode"] == 200, "the key invokes the function its scope names")
code = error_code(lambda: aws.invoke(FunctionName="other", Payload=b"{}"))
check(code == ("AccessDeniedException", 403), f"and no other: {code}")
listed = aws.list_functions()["Functions"]
check(listed == [], f"it reads none of them: {listed}")
code = error_code(lambda: client(secret="not-the-secret").invoke(FunctionName="echo", Payload=b"{}"))
check(code[0] == "InvalidSignatureException", f"a wrong secret is refused: {code}")
