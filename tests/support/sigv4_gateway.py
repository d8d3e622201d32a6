"""A stand-in for Amazon Managed Service for Prometheus's front door: every
request must carry an AWS Signature Version 4 that botocore (AWS's own
Python implementation) computes identically; a good one is passed on to a
real Prometheus, a bad one refused as AMP refuses it.

The refusals follow AWS's documentation of SigV4 errors
(https://docs.aws.amazon.com/IAM/latest/UserGuide/signature-v4-troubleshooting.html)
and AMP's query API (https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-onboard-query-APIs.html):
HTTP 403 with `x-amzn-ErrorType` and a JSON `message`
(`SignatureDoesNotMatch`'s "The request signature we calculated does not
match the signature you provided", an unknown key's "The security token
included in the request is invalid", a credential scoped to another region
or service, a request older than 5 minutes).

Usage: sigv4_gateway.py PORT UPSTREAM_URL REGION SERVICE KEY_ID SECRET [TOKEN]
Prints "ready", then appends one JSON line per request to requests.log in
the working directory: path, verdict, the Authorization header's shape.
"""

import datetime
import hashlib
import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PORT, UPSTREAM, REGION, SERVICE, KEY_ID, SECRET = sys.argv[1:7]
TOKEN = sys.argv[7] if len(sys.argv) > 7 else None


def verdict(method, host, path_qs, headers, body):
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "MissingAuthenticationTokenException", "Missing Authentication Token"
    fields = dict(
        part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(",")
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return "IncompleteSignatureException", "Credential is not a valid scope"
    key_id, day, region, service = scope[:4]
    if key_id != KEY_ID:
        return "UnrecognizedClientException", "The security token included in the request is invalid."
    if region != REGION:
        return "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{region}'."
    if service != SERVICE:
        return "InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'."
    stamp = headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return "IncompleteSignatureException", "x-amz-date is missing or malformed"
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
        return "InvalidSignatureException", "Signature expired"
    if TOKEN is not None and headers.get("x-amz-security-token") != TOKEN:
        return "UnrecognizedClientException", "The security token included in the request is invalid."
    if headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
        return (
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    signed = fields.get("SignedHeaders", "").split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "IncompleteSignatureException", "host and x-amz-date must be signed"
    request = AWSRequest(
        method=method,
        url=f"http://{host}{path_qs}",
        data=body,
        headers={name: (host if name == "host" else headers.get(name, "")) for name in signed},
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(KEY_ID, SECRET, TOKEN), SERVICE, REGION)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != fields.get("Signature"):
        return (
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )
    return None


class Gateway(BaseHTTPRequestHandler):
    def handle_one(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        refused = verdict(self.command, headers.get("host", ""), self.path, headers, body)
        with open("requests.log", "a") as log:
            log.write(json.dumps({
                "path": self.path.split("?")[0],
                "verdict": refused[0] if refused else "ok",
                "authorization": headers.get("authorization", "").split("Signature=")[0],
                "content_sha256": headers.get("x-amz-content-sha256"),
                "tenant": headers.get("x-scope-orgid"),
            }) + "\n")
        if refused:
            payload = json.dumps({"message": refused[1]}).encode()
            self.send_response(403)
            self.send_header("x-amzn-ErrorType", refused[0])
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        forward = urllib.request.Request(
            UPSTREAM + self.path,
            data=body if self.command == "POST" else None,
            method=self.command,
            headers={"content-type": headers["content-type"]} if "content-type" in headers else {},
        )
        try:
            with urllib.request.urlopen(forward, timeout=10) as answer:
                status, data, kind = answer.status, answer.read(), answer.headers.get("content-type")
        except urllib.error.HTTPError as e:
            status, data, kind = e.code, e.read(), e.headers.get("content-type")
        self.send_response(status)
        self.send_header("content-type", kind or "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = handle_one
    do_POST = handle_one

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(PORT)), Gateway)
print("ready", flush=True)
server.serve_forever()
