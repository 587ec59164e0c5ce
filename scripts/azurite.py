#!/usr/bin/env python3
"""A tiny Azure Blob client for the test services (Python standard library only).

scripts/services uses it to see whether Azurite answers and to create the test container,
which object_store cannot do. Requests are signed with SharedKey, as Azure and Azurite expect.

Usage: azurite.py --url URL --account NAME --key KEY ping
       azurite.py --url URL --account NAME --key KEY create-container NAME...
URL is the account's endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1.
"""

import argparse
import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.parse
import urllib.request
from email.utils import formatdate

API_VERSION = "2021-08-06"


def request(args, method, path, query):
    """Sends a signed request with an empty body; returns (status, body)."""
    base = urllib.parse.urlsplit(args.url)
    full_path = base.path.rstrip("/") + path
    headers = {
        "x-ms-date": formatdate(usegmt=True),
        "x-ms-version": API_VERSION,
    }
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    canonical_resource = f"/{args.account}{full_path}" + "".join(
        f"\n{k.lower()}:{v}" for k, v in sorted(query.items())
    )
    # VERB, Content-Encoding, Content-Language, Content-Length (empty when 0), Content-MD5,
    # Content-Type, Date, If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since,
    # Range. urllib sends a Content-Type with any body, so it is set and signed.
    content_type = "application/octet-stream" if method == "PUT" else ""
    to_sign = "\n".join([method, "", "", "", "", content_type, "", "", "", "", "", "", ""])
    to_sign += canonical_headers + canonical_resource
    signature = base64.b64encode(
        hmac.new(base64.b64decode(args.key), to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    headers["Authorization"] = f"SharedKey {args.account}:{signature}"
    headers["Content-Length"] = "0"
    if content_type:
        headers["Content-Type"] = content_type
    url = urllib.parse.urlunsplit(
        (base.scheme, base.netloc, full_path, urllib.parse.urlencode(query), "")
    )
    req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--account", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("command", choices=["ping", "create-container"])
    p.add_argument("names", nargs="*")
    args = p.parse_args()

    if args.command == "ping":
        status, body = request(args, "GET", "/", {"comp": "list"})
        if status != 200:
            print(f"azurite.py: listing containers answered {status}: {body[:300]!r}", file=sys.stderr)
            return 1
        return 0
    for name in args.names:
        status, body = request(args, "PUT", f"/{name}", {"restype": "container"})
        if status == 201:
            print(f"azurite.py: created container {name}", file=sys.stderr)
        elif status == 409:
            pass  # already there
        else:
            print(f"azurite.py: creating container {name} answered {status}: {body[:300]!r}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
